"""The model's building blocks: encoders' token shapes, masked attention, the identity adapter, the mixture of
experts' routing and balance loss."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hffm_opt.learners.layers import Adapter, Attention, Backbone, ImageEncoder, MoE, VectorEncoder, softmax_last
from hffm_opt.learners.specs import ModalitySpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_image_encoder_takes_uint8_or_unit_floats_and_emits_a_token_grid():
    torch.manual_seed(0)
    enc = ImageEncoder(ModalitySpec("img", "image", (3, 32, 32), n_tokens=4), d_model=8, channels=(4, 4, 8, 8))
    img = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = enc(img)
    assert out.shape == (2, 4, 8)
    torch.testing.assert_close(enc(img.float() / 255.0), out)


def test_vector_encoder_shapes_with_and_without_hidden_layer():
    torch.manual_seed(0)
    mlp = VectorEncoder(ModalitySpec("v", "vector", (6,), n_tokens=3, hidden=5), d_model=4)
    lin = VectorEncoder(ModalitySpec("v", "vector", (6,), n_tokens=3, hidden=0), d_model=4)
    assert mlp(_x(7, 6)).shape == lin(_x(7, 6)).shape == (7, 3, 4)
    assert mlp.fc1.out_features == 5 and lin.fc1 is None and lin.fc2.in_features == 6
    # the layer norm makes the tokens blind to the input's scale
    torch.testing.assert_close(lin(_x(7, 6) * 100.0), lin(_x(7, 6)), rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 20), rows=st.integers(1, 5), masked=st.integers(0, 20), seed=st.integers(0, 10**6))
def test_softmax_last_equals_softmax_values_and_gradients(width, rows, masked, seed):
    """The narrow-softmax padding (widths under 16 on a CPU) changes nothing but float rounding, masked entries
    (score -1e9, as attention's) included, up to a row with every entry masked (uniform, as torch's softmax)."""
    x = (_x(rows, 3, width, seed=seed) * 5).requires_grad_(True)
    scores = x.masked_fill(torch.arange(width) < masked, -1e9)
    out, ref = softmax_last(scores), scores.softmax(dim=-1)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
    g = _x(*out.shape, seed=seed + 1)
    grad, = torch.autograd.grad(out, x, g, retain_graph=True)
    ref_grad, = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_masked_keys_have_exactly_no_influence():
    torch.manual_seed(0)
    att = Attention(d_model=8, n_heads=2)
    x = _x(3, 5, 8)
    allowed = torch.ones(3, 5, 5, dtype=torch.bool)
    allowed[:, :, 3:] = False  # nobody attends to tokens 3 and 4
    garbage = x.clone()
    garbage[:, 3:] = 1e4
    torch.testing.assert_close(att(garbage, allowed)[:, :3], att(x, allowed)[:, :3], rtol=0, atol=0)
    assert not torch.equal(att(garbage, torch.ones_like(allowed))[:, :3], att(x, torch.ones_like(allowed))[:, :3])


def test_backbone_has_its_layers_and_a_fresh_adapter_is_the_identity():
    bb = Backbone(d_model=8, n_heads=2, d_ff=16, n_layers=3)
    assert len(bb.layers) == 3 and bb.norm.normalized_shape == (8,)
    ad = Adapter(8, 4)
    x = _x(2, 5, 8)
    assert torch.equal(ad(x), x)
    with torch.no_grad():
        ad.up.weight.fill_(0.5)
    assert not torch.equal(ad(x), x)
    ad.reset()
    assert torch.equal(ad(x), x)


def test_moe_top1_routes_each_token_to_its_best_expert():
    torch.manual_seed(0)
    moe = MoE(d_model=8, n_experts=3, d_hidden=16, top_k=1)
    x = _x(2, 4, 8)
    y, _ = moe(x, torch.ones(2, 4, dtype=torch.bool))
    best = moe.gate(x).argmax(-1)
    for b in range(2):
        for i in range(4):
            torch.testing.assert_close(y[b, i], moe.experts[int(best[b, i])](x[b, i]))


def test_moe_dense_routing_is_the_gate_weighted_sum_and_balanced_loss_is_one():
    """With every expert chosen (top_k = E) the routed fraction of each expert is 1/E, so the Switch loss
    E * sum_j f_j P_j is exactly sum_j P_j = 1 whatever the gate says."""
    torch.manual_seed(1)
    moe = MoE(d_model=8, n_experts=4, d_hidden=8, top_k=4)
    x = _x(3, 5, 8, seed=1)
    y, aux = moe(x, torch.ones(3, 5, dtype=torch.bool))
    p = moe.gate(x).softmax(-1)
    want = sum(p[..., j:j + 1] * moe.experts[j](x) for j in range(4))
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)
    assert aux.item() == pytest.approx(1.0, abs=1e-6)


def test_moe_balance_loss_counts_only_valid_tokens():
    torch.manual_seed(2)
    moe = MoE(d_model=8, n_experts=4, d_hidden=8, top_k=2)
    x = _x(2, 6, 8, seed=2)
    valid = torch.tensor([[True, True, False, True, False, False], [False, True, True, False, False, True]])
    _, aux = moe(x, valid)
    _, alone = moe(x[valid][None], torch.ones(1, int(valid.sum()), dtype=torch.bool))
    torch.testing.assert_close(aux, alone)
    _, all_tokens = moe(x, torch.ones_like(valid))
    assert not torch.allclose(aux, all_tokens)


@pytest.mark.parametrize("top_k,block", [(1, None), (2, None), (2, 1), (2, 3), (3, 8)])
def test_sparse_moe_equals_the_dense_computation_of_the_selected_experts(top_k, block):
    """Forward and gradients (input, gate, every expert) of the sparse dispatch equal the dense layer's, where every
    expert runs on every token and the weights are zero outside the top k."""
    torch.manual_seed(3)
    moe = MoE(d_model=8, n_experts=4, d_hidden=16, top_k=top_k, block=block)
    x = _x(3, 5, 8, seed=3).requires_grad_(True)
    valid = torch.rand(3, 5, generator=torch.Generator().manual_seed(3)) > 0.3
    y, aux = moe(x, valid)
    y_d, aux_d = moe.dense(x, valid)
    torch.testing.assert_close(y, y_d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aux, aux_d, rtol=0, atol=0)
    params = [x, *moe.parameters()]
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad((y * w).sum() + aux, params)
    dense = torch.autograd.grad((y_d * w).sum() + aux_d, params)
    for g, h in zip(grads, dense):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-6)
    assert all(float(g.abs().sum()) > 0 for g in grads[2:])  # every expert was chosen by some token


@pytest.mark.parametrize("top_k,block,chunk", [(2, None, None), (1, None, None), (2, 4, None), (2, None, 2)])
def test_sparse_moe_under_vmap_equals_a_loop_over_devices(top_k, block, chunk):
    """The trainer vmaps local training over devices, each with its own experts, and differentiates the sum of their
    losses (local._device_grads, also in chunks of devices): the sparse layer works there (both dispatches; with top-1
    routing of few tokens some device leaves an expert without rows)."""
    from torch.func import functional_call, grad

    from hffm_opt.learners.local import _device_grads

    torch.manual_seed(5)
    moe = MoE(d_model=8, n_experts=4, d_hidden=16, top_k=top_k, block=block)
    base = dict(moe.named_parameters())
    stacked = {n: p.detach() + 0.05 * torch.randn(3, *p.shape) for n, p in base.items()}
    x = _x(3, 2, 3, 8, seed=5)
    valid = torch.ones(2, 3, dtype=torch.bool)

    def loss(params, xi):
        y, aux = functional_call(moe, params, (xi, valid))
        return (y ** 2).mean() + aux

    fast = _device_grads(loss, chunk)(stacked, x)
    for d in range(3):
        one = grad(loss)({n: v[d] for n, v in stacked.items()}, x[d])
        for n in base:
            torch.testing.assert_close(fast[n][d], one[n], rtol=1e-5, atol=1e-6)
    if top_k == 1:  # an expert no token of a device chose gets exactly zero gradient there (an empty group)
        assert any(float(fast[f"experts.{j}.fc1.weight"][d].abs().sum()) == 0 for d in range(3) for j in range(4))


@pytest.mark.parametrize("shared", [False, True])
def test_the_grouped_product_vmap_rule_equals_a_loop_and_replaces_torchs_fallback(shared):
    """grouped.py registers torch's missing vmap rule for _grouped_mm: both of its forms (rows x per-group weights,
    and the weight gradient's split along the rows), with batched or shared weights and empty groups, equal a loop
    over the batch, and torch's slow per-sample fallback (which warns) is not used."""
    import warnings

    from torch.func import grad, vmap

    from hffm_opt.learners.grouped import grouped_mlp

    d, rows, k, h, n = 3, 12, 8, 12, 4  # the kernel wants 16-byte rows
    x = _x(d, rows, k, seed=7)
    w1 = _x(4, k, h, seed=8) if shared else _x(d, 4, k, h, seed=8)
    w2 = _x(4, h, n, seed=9) if shared else _x(d, 4, h, n, seed=9)
    offs = torch.tensor([[3, 3, 9, 12], [0, 5, 5, 12], [12, 12, 12, 12]], dtype=torch.int32)
    dims = (0, None, None, 0) if shared else 0

    def loss(xi, a, b, o):
        return (grouped_mlp(xi, a, b, o) ** 2).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's "performance drop" warning would fail the test
        out = vmap(grouped_mlp, in_dims=dims)(x, w1, w2, offs)
        grads = vmap(grad(loss, argnums=(0, 1, 2)), in_dims=dims)(x, w1, w2, offs)
    for i in range(d):
        a, b = (w1, w2) if shared else (w1[i], w2[i])
        torch.testing.assert_close(out[i], grouped_mlp(x[i], a, b, offs[i]))
        ref = grad(loss, argnums=(0, 1, 2))(x[i], a, b, offs[i])
        for g, r in zip(grads, ref):
            torch.testing.assert_close(g[i], r, rtol=1e-5, atol=1e-5)
