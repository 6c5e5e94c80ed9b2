"""The modular multi-modal multi-task (M3T) foundation model, small enough for a 2-core CPU.

Structure (section 2 of the design), with the catalogue names of its modules:

- ``encoder:<modality>``: one per modality. Images (3 x 64 x 64, uint8 or float in [0, 1]) go through a
  4-layer strided CNN (group norm) and a max pool to ``grid x grid`` tokens; vectors (e.g. 384-d MiniLM sentence
  embeddings, sensor views, synthetic observations) through a layer norm and a 2-layer MLP (or one linear
  projection) to ``n_tokens`` tokens. Each encoder adds its own positional and modality-type embeddings.
- ``prompt:<task>``: ``n_prompts`` learnable tokens per task, prepended to the modality tokens.
- ``backbone``: a pre-LN transformer encoder (``n_layers`` layers of width ``d_model``) plus a final norm.
- ``adapter:<l>``: a bottleneck adapter after layer ``l`` (``x + up(gelu(down(x)))``, ``up`` zero-initialised
  so a fresh adapter is the identity).
- ``gate`` and ``expert:<j>``: one mixture-of-experts layer on top of the backbone (applied to the prompt
  tokens, the only ones read out) with top-k routing and the Switch-style load-balancing auxiliary loss.
- ``head:<task>``: layer norm + linear classifier reading the mean of the task's prompt-token outputs.

Missing modalities are *absent tokens*: a modality that is not in ``inputs`` contributes no token and its
encoder is never called; a modality that is in ``inputs`` but missing for some samples of the batch
(``present[m][i] == False``) has its tokens removed from attention by the mask (their content, whatever it is,
gets exactly zero attention weight and so exactly zero influence and zero gradient). Prompt tokens attend to
their own task's prompts and the modality tokens; modality tokens attend only to modality tokens. So the
prediction for a task does not depend on which other tasks are evaluated alongside it, and a device that runs
only its tasks computes exactly what the full model computes for those tasks.

Which kinds are frozen is configuration (:attr:`M3TConfig.frozen_kinds`, default encoders and backbone, the
pre-trained foundation model); the rest (prompts, adapters, gate, experts, heads) is what federated training
updates. The layers are in :mod:`.layers`, the modality and task specs in :mod:`.specs`. Units: none (a neural
network); sizes are parameter counts, see :mod:`hffm_opt.learners.catalogue`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hffm_opt.errors import ConfigError

from .layers import Adapter, Backbone, Head, ImageEncoder, MoE, VectorEncoder
from .specs import ModalitySpec, SpecNames, TaskSpec

MODULE_KINDS = ("encoder", "backbone", "adapter", "gate", "expert", "prompt", "head")


@dataclass(frozen=True)
class M3TConfig(SpecNames):
    """Architecture and the frozen/trained split of :class:`M3TModel` (see the module docstring)."""

    modalities: tuple[ModalitySpec, ...]
    tasks: tuple[TaskSpec, ...]
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    n_prompts: int = 2
    n_experts: int = 4
    top_k: int = 2
    d_expert: int = 128
    adapter_dim: int = 16
    image_channels: tuple[int, ...] = (16, 32, 64, 64)
    frozen_kinds: tuple[str, ...] = ("encoder", "backbone")
    aux_loss_weight: float = 0.01

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "frozen_kinds", tuple(self.frozen_kinds))
        object.__setattr__(self, "image_channels", tuple(self.image_channels))
        if not self.modalities or not self.tasks:
            raise ConfigError("M3TConfig needs at least one modality and one task")
        for kind, names in (("modality", [m.name for m in self.modalities]), ("task", [t.name for t in self.tasks])):
            if len(set(names)) != len(names):
                raise ConfigError(f"{kind} names = {names}: must be unique")
        known = {m.name for m in self.modalities}
        for t in self.tasks:
            if not set(t.requires) <= known:
                raise ConfigError(f"task {t.name}.requires = {t.requires}: unknown modality; known: {sorted(known)}")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model = {self.d_model}: must be divisible by n_heads = {self.n_heads}")
        if not 1 <= self.top_k <= self.n_experts:
            raise ConfigError(f"top_k = {self.top_k}: must be in 1..n_experts = {self.n_experts}")
        bad = set(self.frozen_kinds) - set(MODULE_KINDS)
        if bad:
            raise ConfigError(f"frozen_kinds = {self.frozen_kinds}: unknown kinds {sorted(bad)}; known: {MODULE_KINDS}")
        if len(self.image_channels) != 4:
            raise ConfigError(f"image_channels = {self.image_channels}: the image CNN has 4 layers")

    def replace(self, **changes) -> "M3TConfig":
        """A validated copy with some fields changed."""
        return replace(self, **changes)


class ForwardOutput(NamedTuple):
    """``logits[task]`` (B, n_classes) for the tasks asked for; ``aux`` the MoE load-balancing loss (scalar)."""

    logits: dict[str, Tensor]
    aux: Tensor


# --------------------------------------------------------------------------- the model
class M3TModel(nn.Module):
    """The modular M3T network. See the module docstring for the modules and the masking rules."""

    def __init__(self, cfg: M3TConfig, seed: int | None = 0):
        super().__init__()
        self.cfg = cfg
        gen_state = None
        if seed is not None:
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        try:
            d = cfg.d_model
            enc = {}
            for m in cfg.modalities:
                enc[m.name] = ImageEncoder(m, d, cfg.image_channels) if m.kind == "image" else VectorEncoder(m, d)
            self.encoders = nn.ModuleDict(enc)
            self.prompts = nn.ParameterDict({t.name: nn.Parameter(torch.randn(cfg.n_prompts, d) * 0.02)
                                             for t in cfg.tasks})
            self.backbone = Backbone(d, cfg.n_heads, cfg.d_ff, cfg.n_layers)
            self.adapters = nn.ModuleList(Adapter(d, cfg.adapter_dim) for _ in range(cfg.n_layers))
            self.moe = MoE(d, cfg.n_experts, cfg.d_expert, cfg.top_k)
            self.heads = nn.ModuleDict({t.name: Head(d, t.n_classes) for t in cfg.tasks})
        finally:
            if gen_state is not None:
                torch.random.set_rng_state(gen_state)
        self._param_module = {name: self._module_of(name) for name, _ in self.named_parameters()}
        self.apply_freeze()

    # ------------------------------------------------------------------ module bookkeeping
    @property
    def modality_names(self) -> tuple[str, ...]:
        """Modality names, in model order."""
        return self.cfg.modality_names

    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names, in model order (the column order of label arrays)."""
        return self.cfg.task_names

    def module_names(self) -> tuple[str, ...]:
        """Catalogue names of the modules, in catalogue order."""
        c = self.cfg
        return (tuple(f"encoder:{m}" for m in c.modality_names) + ("backbone",)
                + tuple(f"adapter:{l}" for l in range(c.n_layers)) + ("gate",)
                + tuple(f"expert:{j}" for j in range(c.n_experts))
                + tuple(f"prompt:{t}" for t in c.task_names) + tuple(f"head:{t}" for t in c.task_names))

    @staticmethod
    def module_kind(module: str) -> str:
        """Kind of a catalogue module name (``"expert:2"`` -> ``"expert"``)."""
        return module.split(":", 1)[0]

    @staticmethod
    def _module_of(param: str) -> str:
        parts = param.split(".")
        top = parts[0]
        if top == "encoders":
            return f"encoder:{parts[1]}"
        if top == "prompts":
            return f"prompt:{parts[1]}"
        if top == "heads":
            return f"head:{parts[1]}"
        if top == "adapters":
            return f"adapter:{parts[1]}"
        if top == "backbone":
            return "backbone"
        if top == "moe":
            return "gate" if parts[1] == "gate" else f"expert:{parts[2]}"
        raise KeyError(f"parameter {param!r} belongs to no catalogue module")

    def module_of(self, param: str) -> str:
        """Catalogue module owning parameter ``param`` (a name from ``named_parameters()``)."""
        return self._param_module[param]

    def module_parameters(self) -> dict[str, dict[str, nn.Parameter]]:
        """``{module: {parameter name: parameter}}`` covering every parameter exactly once."""
        out: dict[str, dict[str, nn.Parameter]] = {k: {} for k in self.module_names()}
        for name, p in self.named_parameters():
            out[self._param_module[name]][name] = p
        return out

    def is_fixed(self, module: str) -> bool:
        """True for the encoder of a ``fixed`` modality (never trained, whatever the configuration)."""
        if self.module_kind(module) != "encoder":
            return False
        key = module.split(":", 1)[1]
        return any(m.fixed for m in self.cfg.modalities if m.name == key)

    def is_frozen(self, module: str) -> bool:
        """True if the module is not trained: its kind is in ``cfg.frozen_kinds``, or it is a fixed encoder."""
        return self.module_kind(module) in self.cfg.frozen_kinds or self.is_fixed(module)

    def apply_freeze(self, frozen_kinds: Sequence[str] | None = None) -> "M3TModel":
        """Set ``requires_grad`` from the configuration (or from ``frozen_kinds``, which updates the config)."""
        if frozen_kinds is not None:
            self.cfg = self.cfg.replace(frozen_kinds=tuple(frozen_kinds))
        for name, p in self.named_parameters():
            p.requires_grad_(not self.is_frozen(self._param_module[name]))
        return self

    def trainable_names(self) -> tuple[str, ...]:
        """Names of the trainable parameters (those federated training updates)."""
        return tuple(n for n, p in self.named_parameters() if p.requires_grad)

    def reset_modules(self, modules: Sequence[str], seed: int | None = None) -> None:
        """Re-initialise the given catalogue modules (layers get their default init, free parameters such as
        prompts and embeddings N(0, 0.02^2), adapters the identity). ``seed`` makes it reproducible."""
        gen_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        try:
            params = self.module_parameters()
            with torch.no_grad():
                for k in modules:
                    done = set()
                    for pname, p in params[k].items():
                        owner_name = pname.rpartition(".")[0]
                        owner = self.get_submodule(owner_name)
                        if isinstance(owner, (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm)):
                            if owner_name not in done:
                                owner.reset_parameters()
                                done.add(owner_name)
                        else:
                            p.normal_(0.0, 0.02)
                    if self.module_kind(k) == "adapter":
                        self.adapters[int(k.split(":")[1])].reset()
        finally:
            if seed is not None:
                torch.random.set_rng_state(gen_state)

    # ------------------------------------------------------------------ forward
    def _modality_tokens(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None,
                         encoded: Mapping[str, Tensor] | None = None):
        toks, valid = [], []
        for m in self.cfg.modality_names:  # fixed order, whatever the dict order
            if encoded is not None and m in encoded:
                t = encoded[m]
            elif m in inputs:
                t = self.encoders[m](inputs[m])
            else:
                continue
            toks.append(t)
            b, n = t.shape[0], t.shape[1]
            pm = None if present is None else present.get(m)
            if pm is None:
                valid.append(torch.ones(b, n, dtype=torch.bool, device=t.device))
            else:
                valid.append(pm.to(torch.bool)[:, None].expand(b, n))
        if not toks:
            raise ConfigError("forward needs at least one modality in inputs")
        return torch.cat(toks, dim=1), torch.cat(valid, dim=1)

    def _trunk(self, inputs, present, tasks, encoded, adapters: bool) -> tuple[Tensor, Tensor, int]:
        """Tokens ``[prompts of tasks] + [modality tokens]`` through the backbone (and adapters) and its final
        norm: (hidden (B, L, d), token validity (B, L), number of prompt tokens)."""
        mod_tok, mod_valid = self._modality_tokens(inputs, present, encoded)
        b = mod_tok.shape[0]
        n_prompt = self.cfg.n_prompts * len(tasks)
        if tasks:
            prompts = torch.cat([self.prompts[t] for t in tasks], dim=0)
            x = torch.cat([prompts.expand(b, -1, -1), mod_tok], dim=1)
        else:
            x = mod_tok
        n_tok = x.shape[1]
        # structural mask: prompt i attends to its task's prompts and to modality tokens; modality tokens
        # attend only to modality tokens
        group = torch.arange(n_tok, device=x.device)
        group = torch.where(group < n_prompt, group // self.cfg.n_prompts, -1)
        is_mod = group < 0
        struct = ((group[:, None] == group[None, :]) & ~is_mod[:, None]) | is_mod[None, :]
        key_ok = torch.cat([torch.ones(b, n_prompt, dtype=torch.bool, device=x.device), mod_valid], dim=1)
        allowed = struct[None] & key_ok[:, None, :]
        for layer, adapter in zip(self.backbone.layers, self.adapters):
            x = layer(x, allowed)
            if adapters:
                x = adapter(x)
        return self.backbone.norm(x), key_ok, n_prompt

    def _prompt_trunk(self, inputs, present, tasks, encoded, stream=None) -> tuple[Tensor, int]:
        """The prompt tokens' outputs of :meth:`_trunk` (with adapters), computing only what they depend on: the
        modality tokens' stream apart from the prompts (modality tokens attend only to modality tokens), with
        the prompts attending to it as context, and, in the last layer, only the modality tokens' keys and values
        (their outputs are never read); the prompts, the same for every sample, enter the first layer once. Equal
        to :meth:`_trunk`'s prompt rows to float rounding; a constant modality stream (frozen encoders and first
        layer) is also left out of the backward pass, and with ``stream`` (:meth:`first_layer_stream`) the
        encoders and the first layer's work on the modality tokens are not run at all.
        Returns (normed prompt outputs (B, P, d), P)."""
        if stream is None:
            mods, mod_valid = self._modality_tokens(inputs, present, encoded)
        else:
            mods, mod_valid = self._stream_tokens(stream, present)
        b, n_m = mod_valid.shape
        n_p = self.cfg.n_prompts
        n_prompt = n_p * len(tasks)
        group = torch.arange(n_prompt, device=mods.device) // n_p
        own = (group[:, None] == group[None, :]).expand(b, -1, -1)
        allowed_p = torch.cat([own, mod_valid[:, None, :].expand(b, n_prompt, n_m)], dim=2)
        allowed_m = mod_valid[:, None, :].expand(b, n_m, n_m)
        x = torch.cat([self.prompts[t] for t in tasks], dim=0)[None]  # (1, P, d): the first layer projects it once
        n_layers = len(self.backbone.layers)
        for i, (layer, adapter) in enumerate(zip(self.backbone.layers, self.adapters)):
            if i == 0 and stream is not None:
                kv, out = mods.split([2 * self.cfg.d_model, self.cfg.d_model], dim=-1)
            else:
                kv = layer.context_kv(mods)
                out = layer(mods, allowed_m) if i < n_layers - 1 else None
            x_next = layer(x, allowed_p, context_kv=kv)
            if i < n_layers - 1:
                mods = adapter(out)
            x = adapter(x_next)
        return self.backbone.norm(x), n_prompt

    def _stream_tokens(self, stream: Mapping[str, Tensor], present: Mapping[str, Tensor] | None
                       ) -> tuple[Tensor, Tensor]:
        """:meth:`first_layer_stream`'s tokens of the modalities in ``stream``, in model order, and their validity."""
        names = [m for m in self.cfg.modality_names if m in stream]
        if not names:
            raise ConfigError("forward needs at least one modality in stream")
        b = stream[names[0]].shape[0]
        valid = [(torch.ones(b, dtype=torch.bool, device=stream[m].device) if present is None or m not in present
                  else present[m].to(torch.bool))[:, None].expand(b, stream[m].shape[1]) for m in names]
        return torch.cat([stream[m] for m in names], dim=1), torch.cat(valid, dim=1)

    def stream_is_fixed(self) -> bool:
        """True when :meth:`first_layer_stream` depends on the row only (the backbone and every encoder frozen),
        so it may be computed once per row and cached."""
        return self.is_frozen("backbone") and all(self.is_frozen(f"encoder:{m}") for m in self.modality_names)

    @torch.no_grad()
    def first_layer_stream(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                           encoded: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The first layer's work on the modality tokens (the modalities of ``inputs`` / ``encoded``), which the
        prompts of every task read: {m: (B, n_tokens, 3 d_model)}, per token the keys and values the prompts attend
        to (2 d) and the layer's output (d). ``forward(..., stream=...)`` takes it instead of the inputs; valid while
        :meth:`stream_is_fixed`."""
        mods, mod_valid = self._modality_tokens(inputs, present, encoded)
        layer = self.backbone.layers[0]
        allowed = mod_valid[:, None, :].expand(-1, mods.shape[1], -1)
        both = torch.cat([layer.context_kv(mods), layer(mods, allowed)], dim=-1)
        names = [m for m in self.cfg.modality_names if m in inputs or (encoded is not None and m in encoded)]
        sizes = [self.cfg.modalities[self.cfg.modality_names.index(m)].n_tokens for m in names]
        return dict(zip(names, both.split(sizes, dim=1)))

    def _moe(self, prompt_x: Tensor, tasks, task_valid) -> tuple[Tensor, Tensor]:
        """The MoE on the prompt tokens (the only ones read out): (prompt tokens + expert output, aux loss)."""
        b, n_p = prompt_x.shape[0], self.cfg.n_prompts
        if task_valid is None:
            prompt_valid = torch.ones(b, prompt_x.shape[1], dtype=torch.bool, device=prompt_x.device)
        else:
            prompt_valid = torch.cat([task_valid[t].to(torch.bool)[:, None].expand(b, n_p) for t in tasks], dim=1)
        y, aux = self.moe(prompt_x, prompt_valid)
        return prompt_x + y, aux

    def encode(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
               tasks: Sequence[str] | None = None, task_valid: Mapping[str, Tensor] | None = None,
               adapters: bool = True, moe: bool = True, encoded: Mapping[str, Tensor] | None = None):
        """Run encoders, backbone (with adapters) and MoE; return (hidden (B, L, d), token validity (B, L),
        number of prompt tokens per task, aux loss). Tokens are ``[prompts of tasks] + [modality tokens]``."""
        tasks = self.cfg.task_names if tasks is None else tuple(tasks)
        x, key_ok, n_prompt = self._trunk(inputs, present, tasks, encoded, adapters)
        aux = x.new_zeros(())
        if moe and n_prompt:
            prompt_x, aux = self._moe(x[:, :n_prompt], tasks, task_valid)
            x = torch.cat([prompt_x, x[:, n_prompt:]], dim=1)
        return x, key_ok, self.cfg.n_prompts, aux

    def forward(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                tasks: Sequence[str] | None = None, task_valid: Mapping[str, Tensor] | None = None,
                encoded: Mapping[str, Tensor] | None = None, stream: Mapping[str, Tensor] | None = None
                ) -> ForwardOutput:
        """Logits of ``tasks`` (default all) for a batch.

        ``inputs[m]`` (B, *shape) for the modalities the batch has (others: leave them out, their encoders are
        not run); ``present[m]`` (B,) bool marks the samples that really have modality ``m`` (default: all);
        ``task_valid[t]`` (B,) bool marks the samples whose task-``t`` prompt tokens count in the MoE balance
        loss (default: all; training passes ``label >= 0``); ``encoded[m]`` (B, n_tokens, d_model) are tokens
        already computed by encoder ``m`` (used instead of running it, e.g. a frozen encoder evaluated once
        for many devices); ``stream[m]`` (B, n_tokens, 3 d_model) is :meth:`first_layer_stream` of the batch's
        rows, cached: then ``inputs`` and ``encoded`` are not read and the modalities are those of ``stream``.
        """
        tasks = self.cfg.task_names if tasks is None else tuple(tasks)
        if not tasks:
            some = next(iter(stream.values())) if stream else self._modality_tokens(inputs, present, encoded)[0]
            return ForwardOutput({}, some.new_zeros(()))
        x, n_prompt = self._prompt_trunk(inputs, present, tasks, encoded, stream or None)
        x, aux = self._moe(x[:, :n_prompt], tasks, task_valid)
        n_p = self.cfg.n_prompts
        pooled = x.unflatten(1, (len(tasks), n_p)).mean(dim=2)  # (B, tasks, d): mean of each task's prompts
        logits = {t: self.heads[t](pooled[:, i]) for i, t in enumerate(tasks)}
        return ForwardOutput(logits, aux)

    @torch.no_grad()
    def features(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                 encoded: Mapping[str, Tensor] | None = None) -> Tensor:
        """Frozen features for a linear probe: per modality, the mean of its token outputs of the backbone
        (no prompts, no adapters, no MoE), zeros for a missing modality, concatenated in modality order:
        (B, M * d_model)."""
        x, key_ok, _, _ = self.encode(inputs, present, tasks=(), adapters=False, moe=False, encoded=encoded)
        b, d = x.shape[0], x.shape[-1]
        feats, start = [], 0
        for m in self.cfg.modalities:
            if m.name not in inputs and (encoded is None or m.name not in encoded):
                feats.append(x.new_zeros(b, d))
                continue
            n = m.n_tokens
            w = key_ok[:, start:start + n].to(x.dtype).unsqueeze(-1)
            feats.append((x[:, start:start + n] * w).sum(1) / w.sum(1).clamp(min=1.0))
            start += n
        return torch.cat(feats, dim=1)


def task_loss(model: nn.Module, out: ForwardOutput, labels: Tensor, tasks: Sequence[str],
              task_index: Sequence[int], aux_weight: float) -> Tensor:
    """Training loss of one batch: sum over ``tasks`` of the mean cross-entropy over the samples labelled for
    that task (label >= 0; a task with no labelled sample in the batch adds 0) + ``aux_weight`` * MoE loss.
    ``labels`` (B, T_model) int64; ``task_index[i]`` is the column of ``tasks[i]``."""
    total = out.aux * aux_weight
    for t, j in zip(tasks, task_index):
        y = labels[..., j]
        w = (y >= 0).to(out.logits[t].dtype)
        ce = F.cross_entropy(out.logits[t], y.clamp(min=0), reduction="none")
        total = total + (ce * w).sum() / w.sum().clamp(min=1.0)
    return total


def build_model(modalities: Sequence[ModalitySpec], tasks: Sequence[TaskSpec], seed: int | None = 0,
                **config) -> M3TModel:
    """Convenience constructor: ``M3TModel(M3TConfig(modalities, tasks, **config), seed)``."""
    return M3TModel(M3TConfig(tuple(modalities), tuple(tasks), **config), seed=seed)
