"""Which torch device the learners run on, how much memory is free there, and how many devices (clients) one
vectorised call trains there.

``"cpu"`` (the default everywhere), ``"cuda"`` / ``"cuda:N"``, or ``"auto"`` (CUDA when available, else the CPU).
Asking for CUDA where there is none is a :class:`~hffm_opt.errors.ConfigError` (exit 2 at the command line).
On a CPU the calls of an edge round share the cores: :func:`cpu_calls` splits the devices into balanced calls and
:func:`waves` groups them into waves of one call per core, which the trainer runs at once, each on one torch thread, in
forked worker processes (:mod:`.workers`; a device's result does not depend on which call holds it or on how many
cores there are), while the run's own process stays on one thread (:func:`one_torch_thread`); a call holds no more
devices than the available memory allows (:func:`devices_per_call`). Units: bytes for memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from hffm_opt._cores import cpu_cores
from hffm_opt.errors import ConfigError

DEVICE_CHOICES = ("cpu", "cuda", "auto")
CPU_DEVICES_PER_CALL = 256  # clients per vmapped call on a CPU: large enough to vectorise, small for the caches
ACTIVATION_COPIES = 96  # values a client's local step keeps per (sample, token, model width) value (estimate)
PARAMETER_COPIES = 16  # values a client keeps per trainable parameter (copies, gradients, optimiser state, dispatch)


def check_device_name(name: str) -> str:
    """``name`` if it names a device kind (``cpu``, ``cuda``, ``cuda:N``, ``auto``); else ConfigError."""
    base, _, index = str(name).partition(":")
    if base not in DEVICE_CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise ConfigError(f"device = {name!r}: must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return str(name)


def resolve_device(name: str | torch.device = "cpu") -> torch.device:
    """The torch device ``name`` stands for (``auto`` = CUDA if available, else CPU); ConfigError if it asks for
    CUDA where torch sees none."""
    if isinstance(name, torch.device):
        name = str(name)
    name = check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device = {name!r}: CUDA is not available (torch {torch.__version__}, "
                              f"built for CUDA {torch.version.cuda}); use 'cpu' or 'auto'")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device = {name!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def devices_per_call(device: torch.device, tokens: int, batch_size: int, d_model: int, n_params: int,
                     calls_at_once: int = 1) -> int:
    """Clients one vectorised call trains on ``device``, a client's step estimated at 4 bytes x
    (:data:`ACTIVATION_COPIES` x ``batch_size`` samples x ``tokens`` x ``d_model`` + :data:`PARAMETER_COPIES` x
    ``n_params`` trainable parameters): on a CPU :data:`CPU_DEVICES_PER_CALL`, fewer where ``calls_at_once`` such
    calls would not fit in half the available memory; on a GPU as many as fit in half its free memory, a multiple of
    256 in 256..32,768 (the trainer halves it if a call still runs out of memory). A CPU on which even one client's
    step does not fit is a :class:`~hffm_opt.errors.ConfigError` naming the batch size."""
    per_client = 4 * (ACTIVATION_COPIES * batch_size * tokens * d_model + PARAMETER_COPIES * n_params)
    if device.type != "cuda":
        free = free_memory(device)
        fit = free // 2 // calls_at_once // per_client
        if fit < 1:
            raise ConfigError(f"batch_size = {batch_size}: one device's local step needs about "
                              f"{per_client / 2 ** 30:.1f} GiB, and each of the {calls_at_once} calls at once may use "
                              f"{free / 2 / calls_at_once / 2 ** 30:.1f} GiB (half the {free / 2 ** 30:.1f} GiB "
                              f"available); use a smaller batch_size")
        return int(min(CPU_DEVICES_PER_CALL, fit))
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(32768, max(256, free // 2 // per_client // 256 * 256)))


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: a GPU's free memory; on a CPU the host's available memory (Linux's
    ``MemAvailable``, else its free physical pages)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def keep_freed_memory() -> bool:
    """Linux with glibc: keep freed memory inside the process (no ``mmap`` for large blocks, no trimming, one arena
    for every thread), so the many large temporary tensors of vectorised training reuse pages instead of faulting
    fresh zero pages in at every step (on a 2-core CPU a fifth of a round went to the kernel's page faults).
    Process-wide and harmless elsewhere; returns whether it applied. Call it once, before the heavy work (the
    commands do)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    # one arena: threads (e.g. torch's intra-op threads) would otherwise get arenas of their own, whose heaps fault
    # pages in anew
    return (bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
            and bool(libc.mallopt(m_arena_max, 1)))


def cpu_workers() -> int:
    """Calls a CPU runs at once: torch's threads, at most :func:`cpu_cores`."""
    return max(1, min(torch.get_num_threads(), cpu_cores()))


def cpu_calls(n_devices: int, per_call: int, workers: int) -> list[slice]:
    """Consecutive slices of ``n_devices`` devices, each at most ``per_call`` long, as even as possible and as many
    as a multiple of ``workers`` allows (so every core gets a call): e.g. 1,000 devices, 256 per call, 2 workers ->
    4 calls of 250."""
    if n_devices <= 0:
        return []
    n_calls = -(-n_devices // per_call)
    n_calls = min(n_devices, -(-n_calls // workers) * workers)
    size = -(-n_devices // n_calls)
    return [slice(a, min(a + size, n_devices)) for a in range(0, n_devices, size)]


def waves(n_devices: int, per_call: int, workers: int) -> list[list[slice]]:
    """The calls of an edge round of ``n_devices`` participants (slices, in training order) in waves of ``workers``
    calls that run at once (:func:`cpu_calls`; one worker, e.g. a GPU: one call of at most ``per_call`` a wave)."""
    calls = cpu_calls(n_devices, per_call, workers)
    return [calls[i:i + workers] for i in range(0, len(calls), workers)]


@contextlib.contextmanager
def one_torch_thread(device: torch.device | None = None) -> Iterator[None]:
    """Run the block on one torch intra-op thread (on a CPU ``device``; any other device: unchanged), the count
    restored after. Used where other processes or threads already keep every core busy: this process's idle
    OpenMP threads would spin beside them."""
    threads = torch.get_num_threads()
    if threads == 1 or (device is not None and device.type != "cpu"):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
