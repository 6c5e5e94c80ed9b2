"""Checkpoints of a training run (:mod:`.trainer`): after every global round and at the end, the state a run needs to go
on (the cluster copies, every generator, the server optimisers' state and the realised rounds' state) is written
atomically (:func:`hffm_opt._io.atomic_path`) into ``checkpoint_dir``; :func:`resume` loads it back, only into the
run with the same inputs (:func:`signature_of`), so that training again resumes and yields a bit-identical history.
The functions read and write the run's attributes ``clusters``, ``server_state``, ``seen``, ``rng``, ``records``,
``who``, ``pricer`` and ``signature``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from hffm_opt._io import atomic_path
from hffm_opt.errors import CheckpointError

CHECKPOINT = "checkpoint.pt"


def signature_of(run) -> str:
    """Hash of every input of the run but ``config.rounds`` (a checkpoint is only resumed by the same run):
    plan, configuration, availability trace, scenario name and modules, data sizes and the starting model's
    parameters."""
    h = hashlib.sha1()
    cfg = asdict(run.config)
    cfg.pop("rounds")
    h.update(json.dumps({"plan": run.plan.to_dict(), "config": cfg, "scenario": run.scenario.name,
                         "modules": run.scenario.module_names, "devices": run.scenario.n_devices,
                         "rows": run.rows.tolist(), "trace": run.who.fingerprint()},
                        sort_keys=True, default=str).encode())
    for n, p in run.model.named_parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def save(run, directory, r: int) -> None:
    """Write the state after edge round ``r`` atomically into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    on_cpu = _tensors(lambda x: x.cpu())  # portable: a CPU copy whatever the device
    state = {"signature": run.signature, "round": r, "clusters": on_cpu(run.clusters),
             "server": on_cpu(run.server_state), "seen": torch.from_numpy(run.seen.copy()),
             "rng": json.dumps(run.rng.bit_generator.state), "records": json.dumps(run.records),
             "who": run.who.state(), "pricer": run.pricer.state()}
    with atomic_path(directory / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def resume(run, directory) -> int:
    """Load the checkpoint in ``directory`` if there is one; returns the last edge round it holds (0 = none)."""
    run.signature = signature_of(run)
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return 0
    afresh = "delete it, or start afresh with hffm-opt train --restart"
    try:  # truncated, corrupted or not a checkpoint: zip, pickle, torch, key, type and JSON errors alike
        state = torch.load(path, weights_only=True)
        signature, last, clusters = state["signature"], int(state["round"]), dict(state["clusters"])
        server, seen = dict(state["server"]), state["seen"].numpy().astype(bool)
        rng, records = json.loads(state["rng"]), json.loads(state["records"])
        who, pricer = state["who"], state["pricer"]
    except Exception as exc:  # noqa: BLE001
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise CheckpointError(f"checkpoint_dir = {str(directory)!r}: the checkpoint {str(path)!r} is unreadable "
                              f"({reason}); {afresh}") from None
    if signature != run.signature:
        raise CheckpointError(f"checkpoint_dir = {str(directory)!r}: the checkpoint {str(path)!r} was written by a "
                              f"run with other inputs (scenario, plan, configuration or data); use another --out, "
                              f"or {afresh}")
    on_device = _tensors(lambda x: x.to(run.device).clone())
    run.clusters, run.server_state = on_device(clusters), on_device(server)
    run.seen = seen.copy()
    run.rng.bit_generator.state = rng
    run.who.load_state(who)
    run.pricer.load_state(pricer)
    run.records = records
    return last


def _tensors(fn):
    """``fn`` applied to every tensor of nested dicts (a new structure; other values kept)."""
    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return fn(value) if isinstance(value, torch.Tensor) else value
    return walk


