"""What the M3T model reads and predicts: :class:`ModalitySpec` (one input modality), :class:`TaskSpec` (one
classification task) and :class:`SpecNames`, the name lookups shared by the model's configuration and the data
tables. Units: none (shapes are element counts).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hffm_opt.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ModalitySpec:
    """One input modality.

    ``kind`` is ``"image"`` (``shape`` = (channels, height, width); uint8 0..255 or float 0..1 accepted) or
    ``"vector"`` (``shape`` = (dim,)). ``n_tokens`` is the number of tokens the encoder emits (for images it
    must be a square, ``grid**2``). ``hidden`` is the width of a vector encoder's MLP (0 = a single linear
    projection). ``fixed`` = the encoder is a fixed random map that is never trained, not even in pre-training
    (e.g. a frozen projection of precomputed sentence embeddings, which already are a foundation model's output).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    n_tokens: int = 2
    hidden: int = 128
    fixed: bool = False

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"modality name = {self.name!r}: must be an identifier (letters, digits, _)")
        if self.kind == "image":
            if len(self.shape) != 3:
                raise ConfigError(f"modality {self.name}.shape = {self.shape}: an image is (channels, height, width)")
            if math.isqrt(self.n_tokens) ** 2 != self.n_tokens:
                raise ConfigError(f"modality {self.name}.n_tokens = {self.n_tokens}: an image emits grid**2 tokens")
        elif self.kind == "vector":
            if len(self.shape) != 1:
                raise ConfigError(f"modality {self.name}.shape = {self.shape}: a vector modality is (dim,)")
        else:
            raise ConfigError(f"modality {self.name}.kind = {self.kind!r}: must be 'image' or 'vector'")
        if self.n_tokens < 1:
            raise ConfigError(f"modality {self.name}.n_tokens = {self.n_tokens}: must be >= 1")


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: ``n_classes`` labels; ``requires`` = modalities a sample must have for its label
    to be usable (e.g. VQA needs the image and the question); empty = any modality will do."""

    name: str
    n_classes: int
    requires: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "requires", tuple(self.requires))
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"task name = {self.name!r}: must be an identifier (letters, digits, _)")
        if self.n_classes < 2:
            raise ConfigError(f"task {self.name}.n_classes = {self.n_classes}: must be >= 2")


class SpecNames:
    """``modality_names``/``task_names`` of anything holding ``modalities`` and ``tasks`` spec sequences."""

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names, in spec order (the column order of presence arrays)."""
        return tuple(m.name for m in self.modalities)

    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names, in spec order (the column order of label arrays)."""
        return tuple(t.name for t in self.tasks)
