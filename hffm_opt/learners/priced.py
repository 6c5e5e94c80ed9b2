"""The *priced* module catalogue (section 2 of the design): the foundation model being simulated, module by
module on the trained proxy's modules.

The proxy (:class:`~hffm_opt.learners.model.M3TModel`, ~0.26 M parameters) is what trains on a 2-core CPU; the
network must be priced for the model the paper deploys. :func:`priced_catalogue` returns one
:class:`~hffm_opt.network.scenario.ModuleSpec` per module of :func:`~hffm_opt.learners.catalogue.module_catalogue`,
same names, order, kinds, keys, trainable and cluster-local flags (module k of one is module k of the other), with
the sizes, FLOPs and memory of the foundation model.

The default foundation model, :data:`VILT_B32`, is the paper prototype's class of model: a ViLT-B/32
vision-and-language transformer (Kim, Son and Kim, "ViLT: Vision-and-Language Transformer Without Convolution or
Region Supervision", ICML 2021; 87.4 M parameters reported for ViLT-B/32) with adapters, prompts, a mixture of
experts and task heads. Published sizes it uses (ViT-B/32 layer shapes, the backbone ViLT initialises from):

- backbone: 12 pre-LN transformer layers, width d = 768, 12 heads, feed-forward 3,072, a final layer norm and a
  768 x 768 pooler: 7,087,872 parameters per layer, 85.65 M in all;
- image encoder: the 32 x 32 patch projection (3,072 -> 768) with a class token, position and token-type
  embeddings: 2.47 M parameters; a 384 x 384 reference image (ViLT's shorter side) gives 12 x 12 = 144 patches
  + 1 class token;
- text encoder (a vector modality named ``text``): BERT-base-uncased word embeddings (30,522 x 768), 40
  positions (ViLT's maximum text length), token type and layer norm: 23.5 M parameters, 40 tokens;
  another vector modality (a sensor): one linear projection of its input to its ``n_tokens`` tokens of width 768;
- the backbone's parameters and the image projection add up to 88.1 M, the 87.4 M ViLT reports within 1 %.

FLOPs per sample follow the proxy's counting rules (:mod:`.catalogue`): 2 per multiply-add (+1 per bias
element), 5 per normalised element, 4 L^2 d for the two attention products and 5 per score for the softmax,
with L = every modality's tokens + the prompt tokens of every task (the largest sample: 144 + 1 image, 40 text,
``n_prompts`` per task; about 33 GFLOP forward through the backbone, the ViT-B/32 figure of 4.4 GMAC at 50
tokens scaled to ~190 tokens), attention counted dense over all tokens; the same training multipliers (3 x forward
trained, 2 x frozen with a trained module upstream, 1 x otherwise); the MoE on the prompt tokens at its top_k/E share.

The trainable part is the proxy's trainable modules at the foundation width: per-task prompts (``n_prompts`` x
768), bottleneck adapters (``adapter_dim`` = 64 per layer, Houlsby et al. 2019; the 12 layers are shared out
among the proxy's adapters in contiguous groups: with 2 adapters each prices 6 layers), the gate (768 -> E),
E experts (768 -> ``expert_dim`` = 192 -> 768) and per-task heads (layer norm + 768 -> classes). Its natural
size (~2.4 M parameters for easy-VQA) is then scaled by one factor so that the update of all trainable modules
together is exactly the scenario's ``model_bits`` (the paper's 48e6 bits = 1.5 M float32 parameters): module
k's update bits are ``model_bits`` shared out in proportion to its natural size (integers summing exactly to
``model_bits``), its FLOPs and memory scaled with it. Memory: 4 bytes a parameter (float32); training adds the
gradient and the optimiser state (Adam: 2 moments) of the trainable parameters. No activations are counted
(as in the proxy's default catalogue). Units: bits, FLOP per sample, bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hffm_opt.errors import ConfigError
from hffm_opt.network.scenario import ModuleSpec

from .catalogue import cost_multipliers, module_catalogue, optimizer_state
from .model import M3TModel


@dataclass(frozen=True)
class FoundationModel:
    """The published sizes of the simulated foundation model (defaults: :data:`VILT_B32`, module docstring)."""

    name: str = "ViLT-B/32"
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 3072
    patch: int = 32
    image_size: int = 384
    vocab: int = 30522
    text_tokens: int = 40
    text_modalities: tuple[str, ...] = ("text",)
    adapter_dim: int = 64
    expert_dim: int = 192
    bytes_per_param: int = 4

    def __post_init__(self):
        for f in ("d_model", "n_layers", "n_heads", "d_ff", "patch", "image_size", "vocab", "text_tokens",
                  "adapter_dim", "expert_dim", "bytes_per_param"):
            v = getattr(self, f)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"foundation.{f} = {v!r}: must be an integer >= 1")
        if self.d_model % self.n_heads:
            raise ConfigError(f"foundation.d_model = {self.d_model}: must be divisible by n_heads = {self.n_heads}")

    @property
    def layer_params(self) -> int:
        """Parameters of one transformer layer (qkv, output projection, feed-forward, two layer norms)."""
        d, f = self.d_model, self.d_ff
        return 3 * d * d + 3 * d + d * d + d + d * f + f + f * d + d + 4 * d

    def layer_flops(self, n_tok: float) -> float:
        """Forward FLOPs of one transformer layer on ``n_tok`` tokens (module docstring rules)."""
        d, f = self.d_model, self.d_ff
        linear = 2.0 * n_tok * (3 * d * d + d * d + 2 * d * f) + n_tok * (3 * d + d + f + d)
        return linear + 2 * 5.0 * n_tok * d + 4.0 * n_tok * n_tok * d + 5.0 * self.n_heads * n_tok * n_tok


VILT_B32 = FoundationModel()


def _encoder(fm: FoundationModel, spec) -> tuple[float, float, float]:
    """(parameters, forward FLOPs, tokens) of one modality encoder of the foundation model."""
    d = fm.d_model
    if spec.kind == "image":
        n_patch = (fm.image_size // fm.patch) ** 2
        k = spec.shape[0] * fm.patch * fm.patch
        params = k * d + d + (n_patch + 1) * d + d + d  # projection, position (+ class), class token, type
        return params, 2.0 * k * d * n_patch + d * n_patch, n_patch + 1.0
    if spec.name in fm.text_modalities:
        params = fm.vocab * d + fm.text_tokens * d + 2 * d + 2 * d  # words, positions, token types, layer norm
        return params, 5.0 * fm.text_tokens * d, float(fm.text_tokens)
    n, k = spec.n_tokens, spec.shape[0]
    return k * n * d + n * d + n * d + d, 2.0 * k * n * d + n * d, float(n)


def _natural(model: M3TModel, fm: FoundationModel) -> tuple[dict[str, float], dict[str, float]]:
    """Parameters and forward FLOPs per sample of every module at the foundation width, before scaling."""
    cfg, d = model.cfg, fm.d_model
    if fm.n_layers < cfg.n_layers:
        raise ConfigError(f"foundation.n_layers = {fm.n_layers}: must be >= the model's n_layers = {cfg.n_layers} "
                          "(each adapter of the model prices at least one layer of the foundation model)")
    params, flops = {}, {}
    n_tok = cfg.n_prompts * len(cfg.tasks)
    for m in cfg.modalities:
        params[f"encoder:{m.name}"], flops[f"encoder:{m.name}"], tok = _encoder(fm, m)
        n_tok += tok
    params["backbone"] = fm.n_layers * fm.layer_params + 2 * d + d * d + d
    flops["backbone"] = fm.n_layers * fm.layer_flops(n_tok) + 5.0 * n_tok * d + 2.0 * d * d + d
    groups = np.array_split(np.arange(fm.n_layers), cfg.n_layers)  # foundation layers of each proxy adapter
    r = fm.adapter_dim
    for l, g in enumerate(groups):
        params[f"adapter:{l}"] = len(g) * (2 * d * r + r + d)
        flops[f"adapter:{l}"] = len(g) * n_tok * (4.0 * d * r + r + d)
    n_p = cfg.n_prompts * len(cfg.tasks)  # the MoE runs on the prompt tokens
    params["gate"], flops["gate"] = d * cfg.n_experts + cfg.n_experts, n_p * (2.0 * d * cfg.n_experts + cfg.n_experts)
    h, share = fm.expert_dim, cfg.top_k / cfg.n_experts
    for j in range(cfg.n_experts):
        params[f"expert:{j}"] = 2 * d * h + h + d
        flops[f"expert:{j}"] = share * n_p * (4.0 * d * h + h + d)
    for t in cfg.tasks:
        params[f"prompt:{t.name}"], flops[f"prompt:{t.name}"] = cfg.n_prompts * d, 0.0  # tokens: backbone's count
        params[f"head:{t.name}"] = 2 * d + d * t.n_classes + t.n_classes
        flops[f"head:{t.name}"] = 5.0 * d + 2.0 * d * t.n_classes + t.n_classes
    return params, flops


def _share_bits(total: float, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` summing exactly to ``total`` (largest remainders)."""
    exact = total * weights / weights.sum()
    out = np.floor(exact)
    out[np.argsort(-(exact - out), kind="stable")[: int(round(total - out.sum()))]] += 1
    return out


def priced_catalogue(model: M3TModel, model_bits: float, *, foundation: FoundationModel = VILT_B32,
                     optimizer: str = "adam", cluster_local_experts: bool | list[int] = False
                     ) -> tuple[ModuleSpec, ...]:
    """The priced catalogue of ``foundation`` on the modules of ``model`` (see the module docstring).

    ``model_bits`` (bits, > 0): the update of all trainable modules together (the scenario's
    ``prototype.model_bits``); ``optimizer`` and ``cluster_local_experts`` as in
    :func:`~hffm_opt.learners.catalogue.module_catalogue` (whose names, kinds, keys and flags are kept)."""
    if not (isinstance(model_bits, (int, float, np.floating)) and math.isfinite(model_bits) and model_bits >= 1):
        raise ConfigError(f"model_bits = {model_bits!r}: must be a finite number of bits >= 1")
    proxy = module_catalogue(model, optimizer=optimizer, cluster_local_experts=cluster_local_experts)
    opt_state = optimizer_state(optimizer)
    params, fwd = _natural(model, foundation)
    trained = [s.name for s in proxy if s.trainable]
    if not trained:
        raise ConfigError(f"model: frozen_kinds = {model.cfg.frozen_kinds} leave no trainable module to carry "
                          f"model_bits = {model_bits:g}")
    natural_bits = np.array([8.0 * foundation.bytes_per_param * params[k] for k in trained])
    scale = dict(zip(trained, _share_bits(float(model_bits), natural_bits) / natural_bits))
    mults = cost_multipliers(model, {s.name: s.trainable for s in proxy})
    out = []
    for s in proxy:
        f = scale.get(s.name, 1.0)
        n_bytes = foundation.bytes_per_param * params[s.name] * f
        bits = 8.0 * n_bytes
        if s.trainable:
            bits = float(round(bits))  # the integer share (the scale was derived from it)
        out.append(ModuleSpec(
            name=s.name, kind=s.kind, key=s.key, update_bits=bits if s.trainable else 0.0, full_bits=bits,
            flops_per_sample=float(mults[s.name] * fwd[s.name] * f), memory_bytes=float(n_bytes),
            train_memory_bytes=float(n_bytes * (1 + opt_state)) if s.trainable else 0.0,
            trainable=s.trainable, cluster_local=s.cluster_local))
    return tuple(out)


def trainable_scale(model: M3TModel, model_bits: float, foundation: FoundationModel = VILT_B32) -> float:
    """The factor applied to the natural size of the trainable modules to make their update ``model_bits``."""
    params, _ = _natural(model, foundation)
    natural = sum(params[k] for k in model.module_names() if not model.is_frozen(k))
    return float(model_bits) / (8.0 * foundation.bytes_per_param * natural)
