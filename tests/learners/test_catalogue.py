"""The module catalogue is derived from the real model: sizes, FLOP counts, flags."""

import re

import numpy as np
import pytest

from hffm_opt.learners.catalogue import catalogue_summary, forward_flops, module_catalogue, module_param_counts
from hffm_opt.learners.layers import EXPERT_BIAS_COLUMNS
from hffm_opt.learners.model import build_model
from hffm_opt.learners.specs import ModalitySpec, TaskSpec
from hffm_opt.network.scenario import MODULE_KINDS, ModuleSpec

MODS = (ModalitySpec("image", "image", (3, 64, 64), n_tokens=4),
        ModalitySpec("text", "vector", (384,), n_tokens=2, hidden=0, fixed=True),
        ModalitySpec("sensor", "vector", (8,), n_tokens=1, hidden=16))
TASKS = (TaskSpec("vqa", 13, ("image", "text")), TaskSpec("shape", 3, ("image",)), TaskSpec("kind", 2))


@pytest.fixture(scope="module")
def model():
    return build_model(MODS, TASKS, seed=0)


def numel(mod):
    return sum(p.numel() for p in mod.parameters())


def test_parameter_counts_match_torch_submodules(model):
    specs = {s.name: s for s in module_catalogue(model)}
    expected = {"backbone": numel(model.backbone), "gate": numel(model.moe.gate)}
    for m in model.modality_names:
        expected[f"encoder:{m}"] = numel(model.encoders[m])
    for t in model.task_names:
        expected[f"prompt:{t}"] = model.prompts[t].numel()
        expected[f"head:{t}"] = numel(model.heads[t])
    for j, e in enumerate(model.moe.experts):
        expected[f"expert:{j}"] = numel(e)
    for l, a in enumerate(model.adapters):
        expected[f"adapter:{l}"] = numel(a)
    assert set(specs) == set(expected) == set(model.module_names())
    for k, n in expected.items():
        assert specs[k].full_bits == 32 * n, k
        assert specs[k].memory_bytes == 4 * n, k
        assert specs[k].update_bits == (0 if model.is_frozen(k) else 32 * n), k
    assert sum(s.full_bits for s in specs.values()) == 32 * numel(model)
    assert module_param_counts(model)["backbone"] == (numel(model.backbone), 0)


def test_specs_are_valid_and_in_model_order(model):
    specs = module_catalogue(model, cluster_local_experts=[1, 2])
    assert tuple(s.name for s in specs) == model.module_names()
    for s in specs:
        assert isinstance(s, ModuleSpec) and s.kind in MODULE_KINDS
        assert s.trainable == (not model.is_frozen(s.name))
        assert s.cluster_local == (s.name in ("expert:1", "expert:2"))
        assert s.key == (s.name.split(":")[1] if s.kind in ("encoder", "prompt", "head") else None)
    enc = {s.name: s for s in specs}
    assert enc["encoder:text"].key == "text" and not enc["encoder:text"].trainable  # fixed projection
    with pytest.raises(ValueError):
        module_catalogue(model, cluster_local_experts=[7])
    assert len(catalogue_summary(specs)) == len(specs)


def test_flops_follow_layer_shapes(model):
    specs = {s.name: s for s in module_catalogue(model, optimizer="adam")}
    # a head is LayerNorm(d) + Linear(d, C), trained: 3 x forward
    d = model.cfg.d_model
    for t in model.cfg.tasks:
        fwd = 5 * d + 2 * d * t.n_classes + t.n_classes
        assert specs[f"head:{t.name}"].flops_per_sample == pytest.approx(3 * fwd)
        assert specs[f"prompt:{t.name}"].flops_per_sample == 0
    # the text encoder is LayerNorm(384) + Linear(384, 2 d), frozen with nothing upstream: 1 x forward
    fwd = 5 * 384 + 2 * 384 * 2 * d + 2 * d
    assert specs["encoder:text"].flops_per_sample == pytest.approx(fwd)
    # the frozen backbone sits below trained prompts/adapters: forward + activation backward
    f, _ = forward_flops(model)
    assert specs["backbone"].flops_per_sample == pytest.approx(2 * f["backbone"])
    # experts priced at their sparse share top_k / E of the dense cost
    tokens = len(model.task_names) * model.cfg.n_prompts  # the MoE routes the prompt tokens
    dense = tokens * (2 * d * model.cfg.d_expert + model.cfg.d_expert + 2 * model.cfg.d_expert * d + d)
    assert f["expert:0"] == pytest.approx(dense * model.cfg.top_k / model.cfg.n_experts)
    # a smaller reference sample costs less in the shared modules
    f_small, _ = forward_flops(model, modalities=("sensor",), tasks=("kind",))
    assert f_small["backbone"] < f["backbone"] and f_small["encoder:image"] == 0
    assert specs["encoder:image"].flops_per_sample > 1e6  # the CNN is the heavy encoder


def test_memory_and_optimizer_state(model):
    adam = {s.name: s for s in module_catalogue(model, optimizer="adam")}
    sgd = {s.name: s for s in module_catalogue(model, optimizer="sgd")}
    act = {s.name: s for s in module_catalogue(model, activation_batch=16)}
    for k, s in adam.items():
        if s.trainable:
            assert s.train_memory_bytes == 3 * s.memory_bytes  # gradient + 2 Adam moments
            assert sgd[k].train_memory_bytes == s.memory_bytes
        else:
            assert s.train_memory_bytes == 0
    assert act["encoder:image"].memory_bytes > adam["encoder:image"].memory_bytes


def test_unfrozen_backbone_is_trainable_in_catalogue():
    m = build_model(MODS, TASKS, seed=0, frozen_kinds=("encoder",))
    specs = {s.name: s for s in module_catalogue(m)}
    assert specs["backbone"].trainable and specs["backbone"].update_bits == specs["backbone"].full_bits
    f, _ = forward_flops(m)
    assert specs["backbone"].flops_per_sample == pytest.approx(3 * f["backbone"])
    assert np.isfinite([s.flops_per_sample for s in specs.values()]).all()


def _matmul_flops(fn) -> tuple[float, dict]:
    """FLOPs of the matrix products (mm, bmm, convolutions, ...) that ``fn()`` runs, total and per module path."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    per_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    return float(counter.get_total_flops()), per_module


@pytest.mark.parametrize("block", [1, 4, None])
def test_experts_run_their_catalogue_flops_plus_only_block_padding(model, block):
    """FlopCounterMode on the MoE layer: the experts' matmuls run ``N top_k`` rows plus the padding of whole blocks
    (at most ``E (block - 1)``), so they are the catalogue's top_k/E share of the dense cost up to that padding; on
    a CPU without a given block (grouped products) exactly ``N top_k`` rows, the biases inside the products (at most
    ``c / 2d + E / 2kh`` more than the catalogue's multiply-adds)."""
    import torch

    cfg = model.cfg
    moe = model.moe
    moe.block = block
    try:
        b, n_tok = 16, cfg.n_prompts * len(model.task_names)  # the MoE routes the prompt tokens
        x = torch.randn(b, n_tok, cfg.d_model, generator=torch.Generator().manual_seed(0))
        total, _ = _matmul_flops(lambda: moe(x, torch.ones(b, n_tok, dtype=torch.bool)))
        d, h, e, k = cfg.d_model, cfg.d_expert, cfg.n_experts, cfg.top_k
        gate = 2.0 * b * n_tok * d * e
        experts = total - gate
        rows = b * n_tok * k
        f, _ = forward_flops(model)
        catalogue = b * sum(f[f"expert:{j}"] for j in range(e))  # per sample, with the bias adds
        matmuls = catalogue * (4.0 * d * h) / (4.0 * d * h + h + d)  # the catalogue's multiply-adds alone
        if block is None:  # grouped: exactly N top_k rows; the first layer's bias as padded input columns, the
            # second's as the gate-weighted (N, E) x (E, d) product
            c = EXPERT_BIAS_COLUMNS
            assert experts == 2.0 * rows * ((d + c) * h + h * d) + 2.0 * b * n_tok * e * d
            assert matmuls < experts <= matmuls * (1 + c / (2 * d) + e / (2 * k * h))
            return
        bs = moe.block_size(rows)
        n_blocks = (rows + e * (bs - 1)) // bs
        assert experts == 2.0 * 2.0 * d * h * n_blocks * bs  # the blocks that ran, both layers, nothing else
        assert experts == pytest.approx(matmuls * n_blocks * bs / rows)
        assert matmuls <= experts <= matmuls * (1 + e * (bs - 1) / rows)
    finally:
        moe.block = None


def test_model_flops_match_the_catalogue(model):
    """A forward pass of the whole model (raw image, every modality and task) runs the matmul FLOPs the catalogue
    prices, module by module: the catalogue adds only bias, norm and softmax terms and the counter sees the MoE's
    block padding, a few per cent apart; the catalogue prices a sample alone, a batch shares the first layer's
    projection of the prompts."""
    import torch

    b = 32
    g = torch.Generator().manual_seed(0)
    inputs = {"image": torch.randint(0, 256, (b, 3, 64, 64), dtype=torch.uint8, generator=g),
              "text": torch.randn(b, 384, generator=g), "sensor": torch.randn(b, 8, generator=g)}
    with torch.no_grad():
        total, per_module = _matmul_flops(lambda: model(inputs))
    f, _ = forward_flops(model)
    assert total / b == pytest.approx(sum(f.values()), rel=0.05)
    image = per_module["M3TModel.encoders.image"] / b
    assert image == pytest.approx(f["encoder:image"], rel=0.05)
    # the backbone's products are those outside every other module (the keys and values its layers compute for the
    # prompts' context run through a layer's method, not its forward, so the counter does not file them under it)
    others = [k for k in per_module if re.fullmatch(r"M3TModel\.(encoders|adapters|heads)\.[^.]+|M3TModel\.moe", k)]
    backbone = total - sum(per_module[k] for k in others)
    assert backbone > sum(v for k, v in per_module.items() if re.fullmatch(r"M3TModel\.backbone\.layers\.\d+", k))
    # the catalogue counts one sample; a batch projects the prompts into the first layer once, not once per sample
    d, n_prompt = model.cfg.d_model, model.cfg.n_prompts * len(model.task_names)
    shared = 2.0 * d * 3 * d * n_prompt * (1 - 1 / b)
    assert backbone / b == pytest.approx(f["backbone"] - shared, rel=0.05)
    assert backbone / b < f["backbone"] - shared / 2
