"""The record of a training run: :class:`History`, one dict per edge round, with time- and energy-to-accuracy
queries and its CSV/JSON files. :mod:`hffm_opt.learners.trainer` produces it and re-exports it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hffm_opt._io import atomic_write
from hffm_opt.errors import ConfigError

#: the accuracies (percent) a query may select
METRICS = ("accuracy", "served_accuracy", "personalised_accuracy")
_NESTED = {"accuracy_by_task": "acc", "served_accuracy_by_task": "served", "bytes_by_tier": "bytes"}


@dataclass
class History:
    """Per-edge-round records of a training run and what they were produced from (``meta``).

    Each record: ``round`` (1-based edge round), ``global_round``, ``time_s`` (simulated, cumulative, s),
    ``energy_j`` (cumulative, J), ``round_latency_s`` and ``round_energy_j`` (the realised round's own figures),
    ``available`` (devices available), ``participants`` (devices whose update was aggregated), ``stragglers``
    (selected devices the realised round dropped), ``resolved`` (block fading: the continuous part was re-solved
    within the budget; None with static fading), ``bytes_by_tier`` (``d2d``, ``edge``, ``cloud``: bytes moved in
    that round, the evaluator's per-period bits with the backhaul in the period's last round and the rest spread
    evenly), ``evaluated`` and, when evaluated (None otherwise), on the evaluation split: ``accuracy`` (percent,
    mean over tasks of the cluster models' accuracy weighted by cluster size), ``accuracy_by_task``,
    ``served_accuracy`` (mean over devices of the accuracy, on the device's tasks, of the model serving it: its
    cluster's copy) and ``served_accuracy_by_task`` (per task, mean over the devices running it), and
    ``personalised_accuracy`` (each device's model on its own test rows, mean over devices).
    Records written by older versions may lack the newer keys; the queries treat a missing value as None.
    """

    records: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def _evaluated(self, metric: str = "accuracy") -> list[dict]:
        if metric not in METRICS:
            raise ConfigError(f"metric = {metric!r}: must be one of {METRICS}")
        return [r for r in self.records if r.get(metric) is not None]

    @property
    def final_accuracy(self) -> float | None:
        """Accuracy (percent) of the last evaluated round, None if none was evaluated."""
        return self.final("accuracy")

    def final(self, metric: str = "accuracy") -> float | None:
        """``metric`` (one of :data:`METRICS`, percent) of the last round that has it, None if none."""
        ev = self._evaluated(metric)
        return ev[-1][metric] if ev else None

    def accuracy_at(self, time_s: float | None = None, energy_j: float | None = None,
                    metric: str = "accuracy") -> float | None:
        """The last evaluated ``metric`` (percent) reached within ``time_s`` simulated seconds and ``energy_j``
        joules (None = no limit); None if no evaluation falls within the budget."""
        ok = [r for r in self._evaluated(metric) if (time_s is None or r["time_s"] <= time_s)
              and (energy_j is None or r["energy_j"] <= energy_j)]
        return ok[-1][metric] if ok else None

    def _first_reaching(self, target_pct: float, metric: str) -> dict | None:
        return next((r for r in self._evaluated(metric) if r[metric] >= target_pct), None)

    def time_to(self, target_pct: float, metric: str = "accuracy") -> float | None:
        """Simulated time (s) at which ``metric`` (default the global accuracy; ``"served_accuracy"``,
        ``"personalised_accuracy"``) first reached ``target_pct`` percent, None if never."""
        r = self._first_reaching(target_pct, metric)
        return None if r is None else r["time_s"]

    def energy_to(self, target_pct: float, metric: str = "accuracy") -> float | None:
        """Cumulative energy (J) when ``metric`` first reached ``target_pct`` percent, None if never."""
        r = self._first_reaching(target_pct, metric)
        return None if r is None else r["energy_j"]

    def to_frame(self):
        """The records as a pandas DataFrame (``acc_<task>``, ``served_<task>`` and ``bytes_<tier>`` columns
        flattened)."""
        import pandas as pd

        rows = []
        for r in self.records:
            flat = {k: v for k, v in r.items() if k not in _NESTED}
            for key, prefix in _NESTED.items():
                flat.update({f"{prefix}_{t}": v for t, v in (r.get(key) or {}).items()})
            rows.append(flat)
        return pd.DataFrame(rows)

    def to_json(self) -> str:
        """``{"meta": ..., "records": [...]}`` as JSON text."""
        return json.dumps({"meta": self.meta, "records": self.records})

    @classmethod
    def from_json(cls, text: str) -> History:
        """Inverse of :meth:`to_json`."""
        doc = json.loads(text)
        return cls(records=doc["records"], meta=doc["meta"])

    def save(self, directory, name: str = "history") -> tuple[Path, Path]:
        """Write ``<name>.csv`` and ``<name>.json`` into ``directory`` atomically; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = directory / f"{name}.csv", directory / f"{name}.json"
        atomic_write(csv_path, self.to_frame().to_csv(index=False))
        atomic_write(json_path, self.to_json())
        return csv_path, json_path
