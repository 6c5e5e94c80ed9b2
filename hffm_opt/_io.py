"""The one atomic writer and the one JSON encoder.

Every file the package writes goes through a temporary file in the same folder and an ``os.replace``, so a reader
(or a crash, or Ctrl-C) never sees a half-written file and no temporary file is left. Every JSON text the package
prints or writes goes through :func:`dumps_json`: strict JSON (non-finite numbers become ``null``, never the
``NaN``/``Infinity`` that other JSON readers refuse).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to ``path`` (ending in ``suffix``, e.g. ``".png"`` for writers that go by the
    extension); on normal exit it replaces ``path``, on an exception it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def finite_json(obj):
    """``obj`` with numpy scalars and arrays as Python numbers and lists, tuples as lists, and every NaN or
    infinite float as None (recursively through dicts and lists)."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalar or array
        return finite_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_json(obj, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (see :func:`finite_json`); raises TypeError for what JSON cannot hold."""
    return json.dumps(finite_json(obj), indent=indent, allow_nan=False)
