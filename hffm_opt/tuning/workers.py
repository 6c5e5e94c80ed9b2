"""The worker protocol: many workers (processes, machines) share one study through any SQLAlchemy URL.

The count of trials is exact: :func:`run_worker` claims a trial only under a mutex kept in the study's database
(:class:`StudyLock`) and only while finished + running trials < ``n_trials``; it returns when ``n_trials`` trials
are finished (complete, pruned or failed). A trial whose worker died (no heartbeat for ``study.grace_s`` seconds)
is put back to WAITING and re-run, keeping its number and the parameters it had drawn, by the next worker that
claims a trial, so it is neither lost nor counted twice; finished trials are never touched (optuna's own
``fail_stale_trials`` would finish it as FAIL, see :func:`_claim`). The first trial of a new study is the default
configuration (``defaults`` of :mod:`.settings`). A storage URL is only ever shown with its password masked
(:func:`mask_url`, :func:`mask_text`).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time
import uuid

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from .objective import TRIAL_ERRORS, make_objective
from .settings import SEED_MAX, TuneConfigError, TuneSettings, reject

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***`` (``postgresql://u:***@host/db``)."""
    return re.sub(r"(://[^:/@]*:).*@", r"\1***@", str(url), count=1)


def mask_text(text: str, url: str) -> str:
    """``text`` (e.g. a database error) with ``url`` masked and its password, also as decoded, replaced by ``***``."""
    text = str(text).replace(str(url), mask_url(url))
    raw = re.search(r"://[^:/@]*:(.*)@", str(url))
    try:
        decoded = sa.engine.make_url(url).password
    except Exception:  # noqa: BLE001 - an unparsable URL: its raw form is masked
        decoded = None
    for secret in sorted({raw.group(1) if raw else "", str(decoded or "")}, key=len, reverse=True):
        text = text.replace(secret, "***") if secret else text
    return text


def _engine_kwargs(url: str) -> dict:
    """SQLite: wait up to 60 s for another process's write; servers: check pooled connections before use."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def storage_for(url: str, settings: TuneSettings) -> optuna.storages.RDBStorage:
    """An RDB storage on the SQLAlchemy ``url`` with heartbeats (``study.heartbeat_s``, ``study.grace_s``); raises
    :class:`~.settings.TuneConfigError` when the URL's database driver is not installed."""
    try:
        return _retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                                         heartbeat_interval=settings.study["heartbeat_s"],
                                                         grace_period=settings.study["grace_s"]))
    except ImportError as exc:
        hint = ("for PostgreSQL: pip install 'hffm-opt[postgres]' (psycopg2), and the URL "
                "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB" if url.startswith("postgresql") else
                "install this database's SQLAlchemy driver")
        reject("--storage", mask_url(url), f"no driver for this database ({mask_text(exc.__cause__ or exc, url)}); "
               f"{hint}")


def _retry(fn, tries: int = 5):
    """``fn()``, retried on database errors (first creation of the schema by several workers at once)."""
    for attempt in range(tries):
        try:
            return fn()
        except (sa.exc.DBAPIError, optuna.exceptions.StorageInternalError):
            if attempt == tries - 1:
                raise
            time.sleep(random.uniform(0.1, 0.5))


class StudyLock:
    """A mutex shared by every worker of a study on any SQLAlchemy URL: a row of the table ``hffm_opt_locks`` in
    the study's own database. A holder that dies loses it after ``lease_s`` seconds (workers' clocks must agree
    to well within that)."""

    _TABLE = sa.Table("hffm_opt_locks", sa.MetaData(), sa.Column("name", sa.String(255), primary_key=True),
                      sa.Column("owner", sa.String(255), nullable=False),
                      sa.Column("expires", sa.Float, nullable=False))  # time.time() s

    def __init__(self, url: str, name: str, lease_s: float = 30.0):
        self.engine = sa.create_engine(url, **_engine_kwargs(url))
        _retry(lambda: self._TABLE.metadata.create_all(self.engine))
        self.name, self.lease_s = name, lease_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "StudyLock":
        t, busy = self._TABLE, 0
        while True:
            now = time.time()
            try:
                with self.engine.begin() as con:
                    con.execute(sa.delete(t).where(t.c.name == self.name, t.c.expires < now))
                    con.execute(sa.insert(t).values(name=self.name, owner=self.owner, expires=now + self.lease_s))
                return self
            except sa.exc.IntegrityError:  # held by another worker
                pass
            except sa.exc.OperationalError:  # SQLite busy (or the server gone: give up after a while)
                busy += 1
                if busy > 100:
                    raise
            time.sleep(random.uniform(0.02, 0.2))

    def __exit__(self, *exc) -> None:
        t = self._TABLE
        with self.engine.begin() as con:
            con.execute(sa.delete(t).where(t.c.name == self.name, t.c.owner == self.owner))


def open_study(name: str, storage, settings: TuneSettings, kind: str, *, seed_offset: int = 0) -> optuna.Study:
    """Create or load the study ``name`` (seeded TPE; the configured pruner for ``kind == "accuracy"``) and, when it is
    new, enqueue the default configuration as its first trial. Call under :class:`StudyLock`. Raises
    :class:`TuneConfigError` when the stored study has another objective or other settings."""
    s = settings.study
    sampler = optuna.samplers.TPESampler(seed=(s["seed"] + seed_offset) % (SEED_MAX + 1),
                                         n_startup_trials=s["tpe_startup"])
    if kind == "pareto" or s["pruner"] == "none":
        pruner = optuna.pruners.NopPruner()
    elif s["pruner"] == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=s["pruner_startup"])
    else:
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    directions = ["maximize"] if kind == "accuracy" else ["maximize", "minimize"]
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    stored = study.user_attrs
    if "objective" not in stored:
        study.set_user_attr("objective", kind)
        study.set_user_attr("settings", settings.text)
        study.set_user_attr("settings_digest", settings.digest)
        study.enqueue_trial(settings.defaults, user_attrs={"role": "default"})
    elif stored["objective"] != kind or len(study.directions) != len(directions):
        reject("--objective", kind, f"study {name!r} was created with objective {stored['objective']!r}")
    elif stored["settings_digest"] != settings.digest:
        where = f"study {name!r} in {mask_url(storage.url)} was created with"
        differs = _differences(stored.get("settings"), settings.text)
        if not differs:
            raise TuneConfigError(f"{where} other settings (digest {stored['settings_digest']}, these settings "
                                  f"{settings.digest}); use another --study name or the same settings")
        key, here, there = differs[0]
        n = len(differs) - 1
        more = f" (and {n} more setting{'s' * (n > 1)})" if n else ""
        raise TuneConfigError(f"{key} = {here}: {where} {key} = {there}{more}; use another --study name or the same "
                              "settings")
    return study


def _differences(stored: str | None, text: str) -> list[tuple[str, str, str]]:
    """The settings that differ between the settings texts ``text`` (these) and ``stored`` (a study's), each as
    ``(field, value here, value there)`` (``[budget].max_rounds``, ``4``, ``3``); none when ``stored`` is unreadable."""
    try:
        there, here = json.loads(stored), json.loads(text)
    except (TypeError, ValueError):
        return []
    out = []
    for section in sorted(set(here) | set(there)):
        a, b = here.get(section, {}), there.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, ...) != b.get(key, ...):
                out.append((f"[{section}].{key}", *(repr(t[key]) if key in t else "unset" for t in (a, b))))
    return out


def _trial_id(storage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def _claim(study: optuna.Study, storage, n_trials: int) -> tuple[bool, optuna.Trial | None]:
    """Under the lock: put the trials of dead workers back to WAITING, then ``(done, trial)``: done when ``n_trials``
    trials are finished, else a claimed trial if finished + running trials leave a slot, else None (wait)."""
    # The one private Optuna call: no public API lists the trials whose heartbeat is older than the grace period
    # without finishing them. optuna.storages.fail_stale_trials (a wrapper of this very method) sets them to FAIL,
    # a finished state the storage never changes back, which would use up a slot of n_trials; its
    # RetryHeartbeatStaleTrialCallback then adds a copy under a new number (a second write: a worker dying in
    # between loses the trial), so the killed trial would count as failed and its parameters be drawn twice.
    # BaseHeartbeat._get_stale_trial_ids(study_id) is the query behind fail_stale_trials (the storage's heartbeat
    # and grace period, the database server's clock); tested with the Optuna versions pinned in pyproject.toml.
    for trial_id in storage._get_stale_trial_ids(storage.get_study_id_from_name(study.study_name)):
        storage.set_trial_state_values(trial_id, TrialState.WAITING)
    states = [t.state for t in study.get_trials(deepcopy=False)]  # one snapshot: a trial may finish meanwhile
    finished = sum(st in FINISHED for st in states)
    if finished >= n_trials:
        return True, None
    if finished + states.count(TrialState.RUNNING) >= n_trials:
        return False, None
    trial = study.ask()
    storage.record_heartbeat(_trial_id(storage, study, trial.number))
    return False, trial


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _heartbeat(storage, trial_id: int, every_s: float, stop: threading.Event) -> None:
    while not stop.wait(every_s):
        storage.record_heartbeat(trial_id)


def run_trial(study: optuna.Study, trial: optuna.Trial, objective, storage, heartbeat_s: float, log=None) -> TrialState:
    """Run ``objective`` on a claimed trial with heartbeats and tell the study: COMPLETE, PRUNED, or FAIL with
    ``fail_reason`` for :data:`TRIAL_ERRORS`. Any other exception (e.g. Ctrl-C) puts the trial back to WAITING."""
    trial_id = _trial_id(storage, study, trial.number)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(storage, trial_id, heartbeat_s, stop), daemon=True)
    beat.start()
    value, state, note, t0 = None, TrialState.COMPLETE, "", time.perf_counter()
    try:
        value = objective(trial)
    except optuna.TrialPruned as exc:
        state, note = TrialState.PRUNED, str(exc)
    except TRIAL_ERRORS as exc:
        state, note = TrialState.FAIL, f"{type(exc).__name__}: {exc}"
    except BaseException:
        stop.set()
        storage.set_trial_state_values(trial_id, TrialState.WAITING)
        raise
    finally:
        stop.set()
        beat.join()
    try:
        if state == TrialState.FAIL:
            trial.set_user_attr("fail_reason", note)
        study.tell(trial, value, state=state if state != TrialState.COMPLETE else None, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:  # taken for dead and finished by another worker meanwhile
        note += " (already finished by another worker)"
    if log is not None:
        log(f"trial {trial.number} {state.name} in {time.perf_counter() - t0:.1f} s: value {value} {note} "
            f"params {trial.params}")
    return state


def prepare(name: str, url: str, settings: TuneSettings, kind: str, *, objective=None,
            device: str | None = None) -> None:
    """Create the study (and its default trial) before several workers start on it; a new study only once
    ``objective`` (None: :func:`~.objective.make_objective` on the torch ``device``) is built, so every setting is
    checked before the study's name is taken."""
    storage = storage_for(url, settings)
    _checked(name, storage, settings, kind, objective, device)
    with StudyLock(url, f"study:{name}"):
        open_study(name, storage, settings, kind)


def _checked(name: str, storage, settings: TuneSettings, kind: str, objective, device: str | None):
    """``objective``, else for a study not yet stored the one :func:`~.objective.make_objective` builds (which
    checks every setting); None for a stored study (its settings were checked when it was created)."""
    if objective is None and name not in optuna.get_all_study_names(storage):
        return make_objective(settings, kind, device)
    return objective


def run_worker(name: str, url: str, settings: TuneSettings, kind: str, n_trials: int, *, objective=None,
               timeout_s: float | None = None, log=None, device: str | None = None) -> optuna.Study:
    """Work on the study until it holds ``n_trials`` finished trials, or until ``timeout_s`` seconds have passed (no
    trial starts after that); returns the study. ``objective`` defaults to :func:`~.objective.make_objective`
    training on the torch ``device`` (None = the settings'), built before a new study is created (every setting is
    checked before its name is taken). The ``k``-th worker to join seeds its sampler with ``study.seed + k``."""
    if not (isinstance(n_trials, int) and n_trials >= 1):
        reject("--trials", n_trials, "must be an integer >= 1")
    storage = storage_for(url, settings)
    objective = _checked(name, storage, settings, kind, objective, device)
    lock = StudyLock(url, f"study:{name}")
    with lock:
        first = open_study(name, storage, settings, kind)
        joined = int(first.user_attrs.get("workers_joined", 0))
        first.set_user_attr("workers_joined", joined + 1)
    study = open_study(name, storage, settings, kind, seed_offset=joined)
    if _finished(study) >= n_trials:
        return study
    if objective is None:
        objective = make_objective(settings, kind, device)
    start = time.monotonic()
    while timeout_s is None or time.monotonic() - start < timeout_s:
        with lock:
            done, trial = _claim(study, storage, n_trials)
        if done:
            break
        if trial is None:
            time.sleep(settings.study["heartbeat_s"])
        else:
            run_trial(study, trial, objective, storage, settings.study["heartbeat_s"], log)
    return study
