"""The user cache directory of hffm_opt: decoded easy-VQA images (:mod:`.benchmarks`) and pre-trained models
(:func:`~hffm_opt.learners.central.pretrained_model`) are kept there between runs.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache directory of hffm_opt (created on demand): ``$HFFM_OPT_CACHE``, else
    ``$XDG_CACHE_HOME/hffm_opt``, else ``~/.cache/hffm_opt``."""
    env = os.environ.get("HFFM_OPT_CACHE")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = Path(base) / "hffm_opt"
    path.mkdir(parents=True, exist_ok=True)
    return path
