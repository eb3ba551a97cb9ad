"""The fused LoRA linear computes what PEFT computes: same outputs, same gradients, same dropout rate."""

import pytest

torch = pytest.importorskip("torch")

from tunelens.train.lora_fused import fusable, fused_lora_layers, lora_linear  # noqa: E402
from tunelens.testing import tiny_model  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peft(dropout: float = 0.0, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    model, _tok = tiny_model(seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS))
    with torch.no_grad():  # B is zero at init: give it values so the adapter path matters
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.3)
    return peft


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_same_loss_and_lora_gradients_as_peft_without_dropout():
    model = _peft()
    model.train()
    ids = torch.randint(0, 100, (3, 17), generator=torch.Generator().manual_seed(1))
    plain_loss, plain_grads = _loss_and_grads(model, ids)
    with fused_lora_layers(model) as fused:
        assert fused == 2 * len(TARGETS)  # every adapted linear of both layers
        fused_loss, fused_grads = _loss_and_grads(model, ids)
    assert torch.allclose(plain_loss, fused_loss, atol=1e-6, rtol=1e-5)
    assert plain_grads.keys() == fused_grads.keys() and len(plain_grads) == 4 * len(TARGETS)
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, fused_grads[name], atol=1e-6, rtol=1e-4), name


def test_peft_forward_is_back_after_the_block():
    model = _peft()
    layer = next(m for m in model.modules() if fusable(m))
    with fused_lora_layers(model):
        assert "forward" in vars(layer)
    assert "forward" not in vars(layer)


def test_function_matches_the_formula_with_a_bias_and_3d_input():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g, requires_grad=True)
    w, b = torch.randn(7, 6, generator=g), torch.randn(7, generator=g)
    a = torch.randn(3, 6, generator=g, requires_grad=True)
    bb = torch.randn(7, 3, generator=g, requires_grad=True)
    out = lora_linear(x, w, b, a, bb, 1.5, 0.0)
    ref = x @ w.t() + b + 1.5 * (x @ a.t()) @ bb.t()
    assert torch.allclose(out, ref, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, a, bb))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, a, bb))
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_dropout_keeps_the_expected_share_and_scales_the_kept():
    torch.manual_seed(0)
    x = torch.ones(4000, 8)
    a = torch.eye(8)[:4].clone().requires_grad_(True)  # picks 4 input features
    b = torch.eye(4).clone().requires_grad_(True)
    w = torch.zeros(4, 8)
    out = lora_linear(x, w, None, a, b, 1.0, 0.25)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.75))


def test_dropout_gradient_uses_the_same_mask_as_the_forward():
    torch.manual_seed(3)
    x = torch.randn(50, 6, requires_grad=True)
    a = torch.randn(6, 6).requires_grad_(True)
    b = torch.eye(6).requires_grad_(True)
    out = lora_linear(x, torch.zeros(6, 6), None, a, b, 1.0, 0.5)
    (grad_x,) = torch.autograd.grad(out.sum(), x)
    # With W = 0 and B = I, out = (x * m) A^T, so d out.sum() / dx = m * (column sums of A), row by row,
    # and a dropped input (m = 0) has zero gradient exactly where its contribution to the output is 0.
    recovered = (out.detach() @ torch.linalg.inv(a.detach().t())) / x.detach()
    mask = recovered.round(decimals=3)
    assert set(mask.unique().tolist()) <= {0.0, 2.0}
    assert torch.allclose(grad_x, mask * a.detach().sum(dim=0), atol=1e-3)


def test_base_weight_must_be_frozen():
    x = torch.randn(3, 4)
    w = torch.randn(2, 4, requires_grad=True)
    out = lora_linear(x, w, None, torch.randn(2, 4, requires_grad=True), torch.randn(2, 2), 1.0, 0.0)
    with pytest.raises(RuntimeError, match="frozen"):
        out.sum().backward()


def test_not_fusable_when_merged():
    model = _peft()
    layer = next(m for m in model.modules() if fusable(m))
    layer.merge()
    assert not fusable(layer)
    layer.unmerge()
    assert fusable(layer)


def test_under_bf16_autocast_it_runs_in_bf16_and_stays_close_to_peft():
    model = _peft()
    model.train()
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_loss, plain_grads = _loss_and_grads(model, ids)
        with fused_lora_layers(model):
            layer = next(m for m in model.modules() if fusable(m))
            out = layer(torch.randn(3, layer.in_features))
            assert out.dtype == torch.bfloat16  # as autocast runs PEFT's linears
            fused_loss, fused_grads = _loss_and_grads(model, ids)
    assert abs(fused_loss.item() - plain_loss.item()) < 0.02 * abs(plain_loss.item())
    for name, grad in plain_grads.items():
        assert fused_grads[name].dtype == torch.float32  # the LoRA weights' own dtype
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), fused_grads[name].flatten(), dim=0)
        assert cosine > 0.99, name


@pytest.mark.parametrize("drop", [0.05, 0.1, 0.5])
def test_dropout_mask_rate_and_seeding(drop):
    from tunelens.train.lora_fused import dropout_mask

    torch.manual_seed(7)
    mask, keep = dropout_mask((300, 1001), drop, "cpu")  # an odd count: the last 64-bit draw is partly used
    assert mask.dtype == torch.bool and mask.shape == (300, 1001)
    assert abs(keep - (1 - drop)) < 1 / 32768
    assert abs(mask.float().mean().item() - keep) < 0.003  # 300k draws: about 6 standard errors at p = 0.5
    per_lane = mask.flatten()[:300000].view(-1, 4).float().mean(dim=0)  # each of the four 16-bit lanes
    assert (per_lane - keep).abs().max().item() < 0.01
    torch.manual_seed(7)
    again, _ = dropout_mask((300, 1001), drop, "cpu")
    assert torch.equal(mask, again)
