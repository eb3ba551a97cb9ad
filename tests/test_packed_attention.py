"""Attention one sequence at a time over a packed row equals transformers' block-diagonal mask."""

import pytest

torch = pytest.importorskip("torch")

from tunelens.train.packed_attention import (PACKED_SDPA, packed_attention, packed_sdpa_attention, sequence_bounds)  # noqa: E402
from tunelens.testing import tiny_lora_model  # noqa: E402
from tunelens.train.loss import completion_loss_sums  # noqa: E402
from tunelens.train.loop import pack_rows  # noqa: E402


def test_sequence_bounds_split_where_positions_restart():
    assert sequence_bounds(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])) == [(0, 3), (3, 5), (5, 9)]
    assert sequence_bounds(torch.tensor([[5, 6, 7]])) == [(0, 3)]  # one sequence, whatever its offset
    assert sequence_bounds(torch.tensor([[0, 0, 0]])) == [(0, 1), (1, 2), (2, 3)]


def _packed_row(lengths, vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for length in lengths:
        ids = torch.randint(3, vocab, (1, length), generator=g)
        labels = ids.clone()
        labels[0, : length // 3] = -100  # a prompt part that is not trained
        rows.append((ids, torch.ones_like(ids), labels))
    return pack_rows(rows)


@pytest.mark.parametrize("lengths", [(20, 33, 7, 41), (90, 30)])  # the second: longer than the 64-token window
def test_loss_and_lora_gradients_equal_the_masked_path(lengths):
    model, tok = tiny_lora_model(targets=("q_proj", "k_proj", "v_proj", "o_proj"))
    model.train()
    inputs = _packed_row(lengths, len(tok))
    results = []
    for packed in (False, True):  # transformers' sdpa with its block-diagonal mask, then one sequence at a time
        model.zero_grad(set_to_none=True)
        if packed:
            with packed_attention(model) as switched:
                assert switched
                loss, count = completion_loss_sums(model, **inputs)
        else:
            loss, count = completion_loss_sums(model, **inputs)
        loss.backward()
        results.append((loss.item(), count, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (masked_loss, masked_count, masked_grads), (loss, count, grads) = results
    assert count == masked_count > 0
    assert loss == pytest.approx(masked_loss, rel=1e-5)
    for name, grad in masked_grads.items():
        assert torch.allclose(grad, grads[name], atol=1e-5, rtol=1e-4), name


def test_without_position_resets_the_sequences_would_mix():
    """The test above can fail: the same row read as one sequence gives another loss."""
    model, tok = tiny_lora_model()
    inputs = _packed_row((20, 33), len(tok))
    with torch.no_grad(), packed_attention(model):
        apart, _ = completion_loss_sums(model, **inputs)
        inputs["position_ids"] = torch.arange(inputs["input_ids"].shape[1])[None]
        mixed, _ = completion_loss_sums(model, **inputs)
    assert abs(apart.item() - mixed.item()) > 1e-3


def test_the_switch_is_undone_and_skips_other_implementations():
    from tunelens.model.state import base_model_of

    model, _tok = tiny_lora_model()
    base = base_model_of(model)
    assert base.config._attn_implementation == "sdpa"
    with packed_attention(model) as switched:
        assert switched and base.config._attn_implementation == PACKED_SDPA
    assert base.config._attn_implementation == "sdpa"
    base.set_attn_implementation("eager")
    with packed_attention(model) as switched:
        assert not switched and base.config._attn_implementation == "eager"


def test_refuses_rows_it_cannot_read():
    q = torch.randn(2, 2, 5, 8)
    with pytest.raises(RuntimeError, match="one packed row"):
        packed_sdpa_attention(None, q, q, q, None)
    one = torch.randn(1, 2, 5, 8)
    with pytest.raises(RuntimeError, match="no mask"):
        packed_sdpa_attention(None, one, one, one, torch.ones(1, 1, 5, 5, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="cover"):
        packed_sdpa_attention(None, one, one, one, None, position_ids=torch.tensor([[0, 1, 2]]))
