"""Peak resident memory of the process during one piece of work, and what its child processes use (for benchmarks).

``ru_maxrss`` only ever grows, so after a large instance every later record would repeat its peak. :class:`PeakRss`
instead samples the resident set size (``/proc/self/statm``, Linux) every ``interval_s`` in a background thread
while the ``with`` block runs and keeps the largest sample, in MiB. Where ``/proc`` is missing it falls back to
``ru_maxrss`` (the process's peak so far), which is an upper bound. :func:`children_usage` reads the CPU seconds and
peak resident memory of the live child processes (e.g. the trainer's forked workers, :mod:`hffm_opt.learners.workers`)
from ``/proc``.
"""

from __future__ import annotations

import glob
import os
import resource
import threading
from pathlib import Path

_STATM = Path("/proc/self/statm")
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def current_rss_mb() -> float | None:
    """Resident set size now (MiB), or None where ``/proc/self/statm`` does not exist."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


class PeakRss:
    """``with PeakRss() as peak: work()`` then ``peak.mb``: the largest resident set size seen during the block."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while True:
            rss = current_rss_mb()
            if rss is not None:
                self.mb = max(self.mb, rss)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "PeakRss":
        if current_rss_mb() is None:  # no /proc: the process's peak so far, taken at exit
            return self
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            self.mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
            return
        self._stop.set()
        self._thread.join()
        self.mb = max(self.mb, current_rss_mb() or 0.0)


def children_usage() -> tuple[float, float]:
    """(CPU seconds, sum of peak resident MiB) of this process's live child processes (the training workers), read
    from Linux's ``/proc``; (0, 0) elsewhere."""
    cpu_s, peak_mb, me = 0.0, 0.0, str(os.getpid())
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if fields[1] != me:  # the parent's pid
                continue
            cpu_s += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            status = Path(stat).with_name("status").read_text()
            peak_mb += int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB
        except (OSError, IndexError, ValueError):  # gone meanwhile, or no /proc
            continue
    return cpu_s, peak_mb
