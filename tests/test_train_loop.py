"""The training loop alone (fake batch source, no files), packing against padding, bf16, QLoRA's error path."""

import math

import pytest
import torch

from tunelens.train.lora_setup import placement_table, wrap_lora
from tunelens.train.run import Example, collate, make_collate
from tunelens.train.config import TrainConfig
from tunelens.train.loop import LoopParts, optimizer_step, pack_rows, padded_inputs, run_loop
from tunelens.train.loss import completion_loss_sums, loss_module

pytestmark = pytest.mark.usefixtures("one_thread")


def _examples(tok, n=4, lines=(1, 6, 3, 9)):
    from tunelens.model.prompts import encode_pair

    out = []
    for i in range(n):
        ids, prompt_len = encode_pair(tok, f"Write helper {i}.", "def f(x):\n" + "    x = x + 1\n" * lines[i % len(lines)])
        out.append(Example(f"e{i}", i, tuple(ids), prompt_len))
    return out


def _peft(arch="gemma3", seed=0):
    from tunelens.testing import tiny_model

    model, tok = tiny_model(arch, seed=seed)
    config = TrainConfig(lora_dropout=0.0)
    return wrap_lora(model, config, placement_table(model, config)), tok


def _parts(peft_model, tok, lr=1e-2, grad_accum=1, max_grad_norm=0.0, packing=False):
    from accelerate import Accelerator

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    collate_fn = make_collate(TrainConfig(packing=packing), tok)
    return LoopParts(Accelerator(cpu=True), loss_module(peft_model, True), optimizer, scheduler, params, collate_fn,
                     grad_accum=grad_accum, max_grad_norm=max_grad_norm)


def test_loop_alone_lowers_the_loss_and_counts_steps_and_tokens():
    peft_model, tok = _peft()
    peft_model.train()
    batch = _examples(tok)
    per_step = sum(ex.trained_tokens for ex in batch)
    asked, records = [], []

    def batch_of_step(step):
        asked.append(step)
        return batch

    result = run_loop(_parts(peft_model, tok), batch_of_step, range(0, 12), records.append)
    assert asked == list(range(12))
    assert [r.step for r in records] == list(range(1, 13)) and result.last == records[-1]
    assert all(r.trained_tokens == per_step for r in records)
    assert result.trained_tokens == records[-1].total_trained_tokens == 12 * per_step
    assert all(r.learning_rate == 1e-2 and r.grad_norm > 0 and r.tokens_per_s > 0 for r in records)
    assert records[-1].loss < records[0].loss - 0.4  # one batch, seen 12 times: it is being learned
    # The loss a record reports is the mean per trained token of that step's batch, before the update.
    with torch.no_grad():
        loss_sum, count = completion_loss_sums(peft_model, *collate(batch, tok.pad_token_id))
    assert count == per_step and loss_sum.item() / count < records[-1].loss


def test_loop_resumes_at_any_step_with_the_same_seeds():
    records = {}
    for steps in (range(0, 3), range(2, 3)):
        peft_model, tok = _peft()
        peft_model.train()
        torch.manual_seed(123)  # dropout would differ if the loop did not reseed per step
        got = []
        run_loop(_parts(peft_model, tok), lambda step: _examples(tok)[step % 2:], steps, got.append)
        records[steps.start] = got
    assert [r.step for r in records[2]] == [3]
    assert [r.trained_tokens for r in records[0]][-1] == records[2][0].trained_tokens


def test_grad_norm_is_measured_before_clipping():
    peft_model, tok = _peft()
    batch = _examples(tok)
    norms = []
    for bound in (0.0, 1e-3):
        peft_model, tok = _peft()
        parts = _parts(peft_model, tok, lr=0.0, max_grad_norm=bound)
        _loss, _tokens, norm = optimizer_step(parts, batch)
        norms.append(norm)
    assert norms[0] == pytest.approx(norms[1], rel=1e-5) and norms[0] > 1e-3
    # The plain norm over the LoRA gradients, for the unclipped case.
    peft_model, tok = _peft()
    loss_sum, count = completion_loss_sums(peft_model, *collate(batch, tok.pad_token_id))
    (loss_sum / count).backward()
    plain = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in peft_model.parameters() if p.requires_grad))
    assert norms[0] == pytest.approx(plain, rel=1e-4)


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_packed_row_gives_each_sequence_its_own_logits(arch):
    """No cross-contamination: each packed segment's logits equal that example's alone."""
    peft_model, tok = _peft(arch)
    peft_model.eval()
    batch = _examples(tok)  # the tiny Gemma's sliding window is 64: the packed row is longer than that
    packed = pack_rows([collate([ex], tok.pad_token_id) for ex in batch])
    assert packed["input_ids"].shape[1] == sum(len(ex.ids) for ex in batch) > 64
    with torch.no_grad():
        logits = peft_model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        naive = peft_model(input_ids=packed["input_ids"], use_cache=False).logits[0]  # concatenated, no position reset
        start = 0
        for ex in batch:
            alone = peft_model(input_ids=torch.tensor([ex.ids])).logits[0]
            end = start + len(ex.ids)
            assert torch.allclose(logits[start:end], alone, atol=1e-4), ex.pair_id
            if start:  # without the reset, later examples see earlier ones
                assert not torch.allclose(naive[start:end], alone, atol=1e-3)
            start = end


def test_packed_loss_and_gradients_equal_padded():
    peft_model, tok = _peft()
    batch = _examples(tok)
    results = []
    for packing in (False, True):
        peft_model.zero_grad()
        inputs = make_collate(TrainConfig(packing=packing), tok)(batch)
        loss, count = completion_loss_sums(peft_model, **inputs)
        loss.backward()
        grads = [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]
        results.append((loss.item(), count, grads))
    (padded_loss, padded_count, padded_grads), (packed_loss, packed_count, packed_grads) = results
    assert packed_count == padded_count == sum(ex.trained_tokens for ex in batch)
    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    for a, b in zip(padded_grads, packed_grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)  # gradients of a summed loss: O(10)
    # The label of each example's first token is never trained (it would be predicted across a boundary).
    packed = pack_rows([collate([ex], tok.pad_token_id) for ex in batch])
    starts = torch.cumsum(torch.tensor([0] + [len(ex.ids) for ex in batch[:-1]]), 0)
    assert (packed["labels"][0, starts] == -100).all()


def test_padded_inputs_is_collate():
    _model, tok = _peft()
    batch = _examples(tok, n=2)
    inputs = padded_inputs(*collate(batch, tok.pad_token_id))
    assert inputs["attention_mask"].sum() == sum(len(ex.ids) for ex in batch)


# ---------------------------------------------------------------- bf16 and 4-bit


def test_bf16_autocast_runs_the_matmuls_in_bfloat16_and_stays_close():
    peft_model, tok = _peft()
    inputs = make_collate(TrainConfig(), tok)(_examples(tok))
    seen = []
    layer = peft_model.base_model.model.model.layers[0].mlp.down_proj
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    losses = [loss_module(peft_model, True, bf16)(**inputs)[0].item() for bf16 in (False, True)]
    handle.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert losses[1] == pytest.approx(losses[0], rel=2e-2) and losses[1] != losses[0]
    assert all(p.dtype == torch.float32 for p in peft_model.parameters() if p.requires_grad)


def test_load_in_4bit_without_bitsandbytes_is_one_clear_error(tmp_path, monkeypatch):
    import importlib.util

    from tunelens.errors import UserError
    from tunelens.train.lora_setup import load_4bit
    from tunelens.testing import tiny_model
    from tunelens.train.run import train

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    with pytest.raises(UserError, match="--load-in-4bit needs the bitsandbytes package: pip install bitsandbytes"):
        load_4bit("gemma3-270m", "cuda")
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    model, tok = tiny_model("llama")
    with pytest.raises(UserError, match="load_in_4bit applies when train loads the model itself"):
        train(TrainConfig(max_steps=1, eval_split=0.0, load_in_4bit=True), data, tmp_path / "a", model=model,
              tokenizer=tok)
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    if real_find_spec("bitsandbytes") is not None:
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            load_4bit("gemma3-270m", "cpu")
