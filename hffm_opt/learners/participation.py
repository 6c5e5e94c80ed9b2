"""Who takes part in an edge round: device availability and partial participation (client sampling).

Per edge round ``r`` (1-based), before the round is priced:

1. **availability**: each device is available with its probability (``availability``: one float for every device
   or one per device, independent Bernoulli draws every round), or exactly in the rounds a trace file lists;
2. **sampling**: of the *eligible* devices (available, assigned at least one module, holding training rows), a
   fraction ``participation`` in (0, 1] is drawn uniformly without replacement: ``ceil(participation x n)`` of
   the ``n`` eligible devices (at least one when there is any).

Stragglers are decided afterwards, by the evaluator on the realised round (:mod:`hffm_opt.learners.dynamics`).
Each of the two draws has its own generator, seeded from the run's seed and a fixed stream number
(:func:`stream`), so the minibatch draws of training are the same whatever these options are; the generators'
states travel in the trainer's checkpoint. With the defaults (probability 1, no trace, participation 1) nothing
is drawn and every eligible device takes part.

A trace is a CSV file with the header ``device,start_round,end_round`` and one available interval per line:
``device`` is the device index (scenario order, 0-based), ``start_round <= end_round`` are edge rounds (1-based,
inclusive); a device may have several intervals and is unavailable in every round none of them covers.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np

from hffm_opt.errors import ConfigError
from hffm_opt.network.limits import MAX_DEVICES, MAX_ROUNDS

TRACE_HEADER = ("device", "start_round", "end_round")
#: stream numbers of the run's auxiliary generators (the minibatch generator is the seed itself)
STREAMS = {"fading": 1, "availability": 2, "sampling": 3}


def stream(seed: int, name: str) -> np.random.Generator:
    """The run's generator for ``name`` (one of :data:`STREAMS`), independent of the minibatch generator."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(STREAMS[name],)))


def read_trace(path, n_devices: int | None) -> np.ndarray:
    """(L, 3) int64 rows ``device, start_round, end_round`` of the trace file ``path``, checked strictly (device
    indices against ``n_devices``; None: only that they are not negative, when the network is not known yet)."""
    p = Path(path)
    where = f"availability_trace = {str(path)!r}"
    if p.exists() and not p.is_file():
        raise ConfigError(f"{where}: not a regular file (a folder, device, pipe or socket)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or tuple(c.strip() for c in rows[0]) != TRACE_HEADER:
        got = rows[0] if rows else "an empty file"
        raise ConfigError(f"{where}: header = {got!r}: must be exactly {','.join(TRACE_HEADER)}")
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3:
            raise ConfigError(f"{where}: line {line} = {row!r}: must have 3 fields {','.join(TRACE_HEADER)}")
        values = []
        for name, cell in zip(TRACE_HEADER, row):
            try:
                values.append(int(cell.strip()))
            except ValueError:
                raise ConfigError(f"{where}: line {line}: {name} = {cell!r}: must be an integer") from None
        device, start, end = values
        if device < 0 or device >= (n_devices if n_devices is not None else MAX_DEVICES):
            span = f"in [0, {n_devices if n_devices is not None else MAX_DEVICES:,})"
            raise ConfigError(f"{where}: line {line}: device = {device}: must be a device index {span}")
        if start < 1:
            raise ConfigError(f"{where}: line {line}: start_round = {start}: must be >= 1 (rounds are 1-based)")
        if end < start:
            raise ConfigError(f"{where}: line {line}: end_round = {end}: must be >= start_round = {start}")
        if end > MAX_ROUNDS:
            raise ConfigError(f"{where}: line {line}: end_round = {end}: must be at most {MAX_ROUNDS:,} (the most "
                              "edge rounds a run trains)")
        out.append(values)
    return np.array(out, dtype=np.int64).reshape(-1, 3)


class Participation:
    """The availability and sampling draws of one run (see the module docstring).

    ``availability`` a probability or a (U,) sequence of them; ``trace`` a trace file path or None (then the
    probabilities are not used); ``participation`` the sampled fraction; ``seed`` the run's seed."""

    def __init__(self, n_devices: int, availability=1.0, trace=None, participation: float = 1.0, seed: int = 0):
        p = np.asarray(availability, dtype=float)
        if p.ndim == 0:
            p = np.full(n_devices, float(p))
        if p.shape != (n_devices,):
            raise ConfigError(f"availability has {p.size} entries: must be one probability or one per device "
                              f"({n_devices})")
        self.probability = p
        self.trace = None if trace is None else read_trace(trace, n_devices)
        self.fraction = float(participation)
        self.n_devices = n_devices
        self.rng_available = stream(seed, "availability")
        self.rng_sample = stream(seed, "sampling")

    @property
    def everyone(self) -> bool:
        """True when every eligible device takes part in every round (nothing is drawn)."""
        return self.trace is None and bool((self.probability >= 1).all()) and self.fraction >= 1

    def available(self, r: int) -> np.ndarray:
        """(U,) bool: the devices available in edge round ``r`` (1-based)."""
        if self.trace is not None:
            t = self.trace
            out = np.zeros(self.n_devices, bool)
            out[t[(t[:, 1] <= r) & (r <= t[:, 2]), 0]] = True
            return out
        if (self.probability >= 1).all():
            return np.ones(self.n_devices, bool)
        return self.rng_available.random(self.n_devices) < self.probability

    def sample(self, eligible: np.ndarray) -> np.ndarray:
        """(U,) bool: the sampled subset of ``eligible`` ((U,) bool)."""
        if self.fraction >= 1:
            return eligible.copy()
        idx = np.flatnonzero(eligible)
        k = min(idx.size, math.ceil(round(self.fraction * idx.size, 9)))
        out = np.zeros_like(eligible)
        if k:
            out[self.rng_sample.choice(idx, size=k, replace=False)] = True
        return out

    def fingerprint(self) -> str:
        """Hash of the trace's intervals ('' without a trace): part of a run's signature."""
        if self.trace is None:
            return ""
        return hashlib.sha1(self.trace.tobytes()).hexdigest()

    def state(self) -> str:
        """The generators' states as JSON text (for a checkpoint)."""
        return json.dumps([self.rng_available.bit_generator.state, self.rng_sample.bit_generator.state])

    def load_state(self, text: str) -> None:
        """Restore :meth:`state`."""
        a, s = json.loads(text)
        self.rng_available.bit_generator.state, self.rng_sample.bit_generator.state = a, s
