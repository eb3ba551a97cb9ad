"""LoRA SFT: masking, the fast loss path, accumulation, output and provenance, on tiny in-process models."""

import hashlib
import json

import pytest
import torch

from tunelens.errors import UserError
from tunelens.train.lora_setup import layer_ranges, placement_table, wrap_lora
from tunelens.train.run import Example, collate, encode_examples, mask_spans, train
from tunelens.train.config import TrainConfig
from tunelens.train.loop import BatchPlan, LoopParts, optimizer_step, padded_inputs, split_even
from tunelens.train.loss import completion_loss_sums, linear_cross_entropy, loss_module
from tunelens.train.metrics import read_metrics


pytestmark = pytest.mark.usefixtures("one_thread")


def chat(instruction, response, **extra):
    return {**extra, "messages": [{"role": "user", "content": instruction},
                                  {"role": "assistant", "content": response}]}


def write_pairs(path, n=8, seed=0):
    """Pairs whose responses differ a lot in length, so per-micro-batch averaging would be visibly wrong."""
    rows = []
    for i in range(n):
        body = "    return a + b\n" * (1 + (i * 5 + seed) % 7)
        rows.append(chat(f"Write function number {i} that adds two numbers.", f"def add_{i}(a, b):\n{body}", id=f"p{i}"))
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def fresh_tiny(arch="gemma3", seed=0):
    from tunelens.testing import tiny_model

    return tiny_model(arch, seed=seed)


def lora_weights(directory):
    from safetensors.torch import load_file

    return load_file(directory / "adapter_model.safetensors")


def assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), (key, (a[key] - b[key]).abs().max())


# ---------------------------------------------------------------- masking and batching


def test_collate_masks_prompt_and_padding():
    examples = [Example("a", 1, (11, 12, 13, 14, 15), 2), Example("b", 2, (21, 22, 23), 1)]
    input_ids, attention, labels = collate(examples, pad_id=0)
    assert input_ids.tolist() == [[11, 12, 13, 14, 15], [21, 22, 23, 0, 0]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert labels.tolist() == [[-100, -100, 13, 14, 15], [-100, 22, 23, -100, -100]]
    assert [ex.trained_tokens for ex in examples] == [3, 2]


def test_encode_examples_truncates_and_skips_and_counts_reconcile(tiny_gemma):
    from tunelens.model.prompts import encode_pair
    from tunelens.data.records import Pair

    _model, tok = tiny_gemma
    pairs = [Pair("short", "add", "return 1", 1, {}), Pair("long", "add", "x = 1\n" * 40, 2, {}),
             Pair("huge-prompt", "word " * 200, "ok", 3, {})]
    short_ids, short_prompt = encode_pair(tok, "add", "return 1")
    max_length = len(short_ids) + 5
    data = encode_examples(tok, pairs, max_length)
    assert [ex.pair_id for ex in data.examples] == ["short", "long"]
    assert data.truncated == ("long",) and data.skipped == ("huge-prompt",)
    assert len(data.examples) + len(data.skipped) == len(pairs)
    short, long = data.examples
    assert short.ids == tuple(short_ids) and short.prompt_len == short_prompt
    assert len(long.ids) == max_length and long.prompt_len == short_prompt  # same prompt "add"


def test_mask_view_counts_match_encode_pair(tiny_gemma):
    from tunelens.model.prompts import encode_pair, render_prompt
    from tunelens.data.records import Pair

    _model, tok = tiny_gemma
    pair = Pair("p", "Reverse a string.", "def rev(s):\n    return s[::-1]\n", 1, {})
    ids, prompt_len = encode_pair(tok, pair.instruction, pair.response)
    view = mask_spans(tok, pair)
    assert (view.masked_tokens, view.trained_tokens, view.cut_tokens) == (prompt_len, len(ids) - prompt_len, 0)
    assert view.spans[0] == (render_prompt(tok, pair.instruction), "masked")
    assert view.spans[1][1] == "trained" and view.spans[1][0].startswith("def rev(s):")
    cut = mask_spans(tok, pair, max_length=prompt_len + 2)
    assert (cut.masked_tokens, cut.trained_tokens, cut.cut_tokens) == (prompt_len, 2, len(ids) - prompt_len - 2)


def test_split_even_and_layer_ranges():
    assert split_even(list(range(5)), 3) == [[0, 1], [2, 3], [4]]
    assert split_even([7], 3) == [[7], [], []]
    assert layer_ranges((0, 1, 2, 5, 7, 8)) == "0-2, 5, 7-8"
    assert layer_ranges(()) == "-"


def test_batch_plan_is_a_seeded_permutation_per_epoch():
    config = TrainConfig(batch_size=2, grad_accum=2, epochs=2, seed=3)
    plan = BatchPlan(10, config, world=1)
    assert (plan.global_batch, plan.steps_per_epoch, plan.total_steps) == (4, 3, 6)
    epoch0 = [i for step in range(3) for i in plan.indices(step)]
    epoch1 = [i for step in range(3, 6) for i in plan.indices(step)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(10))
    assert epoch0 != epoch1
    again = BatchPlan(10, config, world=1)
    assert [again.indices(s) for s in (5, 0, 4)] == [plan.indices(s) for s in (5, 0, 4)]


# ---------------------------------------------------------------- the loss


def _lora_model(arch="gemma3", softcap=None):
    model, tok = fresh_tiny(arch)
    if softcap is not None:
        model.config.final_logit_softcapping = softcap
    config = TrainConfig(lora_dropout=0.0)
    peft_model = wrap_lora(model, config, placement_table(model, config))
    torch.manual_seed(1)
    with torch.no_grad():  # B starts at zero; make the adapter matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    return peft_model, tok


def _batch(tok):
    from tunelens.model.prompts import encode_pair

    examples = []
    for i in range(3):
        ids, prompt_len = encode_pair(tok, f"task {i}", "x = 1\n" * (i + 1))
        examples.append(Example(str(i), i, tuple(ids), prompt_len))
    return examples, collate(examples, tok.pad_token_id)


@pytest.mark.parametrize("softcap,chunk", [(None, 256), (3.0, 256), (None, 5), (3.0, 7)])
def test_fast_path_equals_full_logits_loss_and_gradients(softcap, chunk):
    peft_model, tok = _lora_model(softcap=softcap)
    examples, (input_ids, attention, labels) = _batch(tok)
    results = {}
    for trained_only in (True, False):
        peft_model.zero_grad()
        loss, count = completion_loss_sums(peft_model, input_ids, attention, labels, trained_only=trained_only,
                                           chunk_tokens=chunk)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.requires_grad}
        results[trained_only] = (loss.item(), count, grads)
    (fast_loss, fast_count, fast_grads), (full_loss, full_count, full_grads) = results[True], results[False]
    assert fast_count == full_count == sum(ex.trained_tokens for ex in examples)
    assert fast_loss == pytest.approx(full_loss, rel=1e-5)
    for name in fast_grads:
        assert torch.allclose(fast_grads[name], full_grads[name], atol=1e-6, rtol=1e-4), name
    # transformers' own loss is the mean over the same positions: an independent check of the plain path.
    with torch.no_grad():
        reference = peft_model(input_ids=input_ids, attention_mask=attention, labels=labels).loss.item()
    assert fast_loss / fast_count == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_linear_cross_entropy_equals_plain_logits_in_value_and_gradients(softcap):
    torch.manual_seed(0)
    hidden = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (11,))
    fused = linear_cross_entropy(hidden, weight, targets, softcap, chunk_tokens=4)  # chunks of 4, 4, 3
    (fused * 0.5).backward()
    fused_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    logits = hidden @ weight.t()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    plain = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    (plain * 0.5).backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-6)
    assert torch.allclose(fused_grads[0], hidden.grad, atol=1e-6)
    assert torch.allclose(fused_grads[1], weight.grad, atol=1e-6)
    with torch.no_grad():  # eval: the value alone
        assert linear_cross_entropy(hidden, weight, targets, softcap, 4).item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("block", [7, 50, 64])  # blocks of 7 (the last one of 1), exactly the vocabulary, more
def test_vocab_blocked_head_equals_plain_logits_with_a_frozen_weight(softcap, block):
    from tunelens.train.loss import _vocab_blocked_chunk

    torch.manual_seed(1)
    hidden = torch.randn(11, 8, dtype=torch.float64, requires_grad=True) * 3  # large logits: the max moves
    hidden.retain_grad()
    weight = torch.randn(50, 8, dtype=torch.float64)
    targets = torch.tensor([0, 49, 6, 7, 13, 14, 20, 21, 48, 3, 3])  # block edges on both sides
    loss, grad = _vocab_blocked_chunk(hidden.detach(), targets, weight, softcap, True, block=block)
    logits = hidden @ weight.t()
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    plain = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    plain.backward()
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
    assert torch.allclose(grad, hidden.grad, atol=1e-6)
    value_only, none = _vocab_blocked_chunk(hidden.detach(), targets, weight, softcap, False, block=block)
    assert none is None and value_only.item() == pytest.approx(plain.item(), rel=1e-6)


def test_linear_cross_entropy_with_a_frozen_head_takes_the_blocked_path_and_agrees():
    torch.manual_seed(2)
    hidden = torch.randn(9, 8, requires_grad=True)
    weight = torch.randn(5000, 8)  # two blocks of 4096 rows
    targets = torch.randint(0, 5000, (9,))
    fused = linear_cross_entropy(hidden, weight, targets, None, chunk_tokens=4)
    (grad,) = torch.autograd.grad(fused * 2.0, hidden)
    plain = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    (plain_grad,) = torch.autograd.grad(plain * 2.0, hidden)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)
    assert torch.allclose(grad, plain_grad, atol=1e-5)


class _RecordingOptimizer:
    """Stands in for AdamW: keeps the accumulated gradient that step() would have used."""

    def __init__(self, params):
        self.params, self.grads = list(params), None

    def step(self):
        self.grads = [p.grad.clone() for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def _accumulated_grads(peft_model, examples, batch_size, grad_accum, pad_id):
    from accelerate import Accelerator

    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = _RecordingOptimizer(params)
    parts = LoopParts(Accelerator(cpu=True), loss_module(peft_model, True), optimizer, None, params,
                      lambda chunk: padded_inputs(*collate(chunk, pad_id)), grad_accum=grad_accum)
    loss, tokens, _norm = optimizer_step(parts, examples)
    return loss, tokens, optimizer.grads


def test_grad_accumulation_equals_one_big_batch(tiny_gemma, tmp_path):
    from tunelens.model.prompts import encode_pair
    from tunelens.data.records import load_pairs

    peft_model, tok = _lora_model()
    pairs = load_pairs(write_pairs(tmp_path / "pairs.jsonl", n=8))
    examples = [Example(p.id, p.line, tuple(ids), n) for p in pairs for ids, n in [encode_pair(tok, p.instruction, p.response)]]
    total = sum(ex.trained_tokens for ex in examples)
    big = _accumulated_grads(peft_model, examples, 8, 1, tok.pad_token_id)
    accumulated = _accumulated_grads(peft_model, examples, 1, 8, tok.pad_token_id)
    mixed = _accumulated_grads(peft_model, examples, 2, 4, tok.pad_token_id)
    assert big[1] == accumulated[1] == mixed[1] == total
    assert big[0] == pytest.approx(accumulated[0], rel=1e-5)
    for g_big, g_acc, g_mixed in zip(big[2], accumulated[2], mixed[2]):
        assert torch.allclose(g_big, g_acc, atol=1e-7, rtol=1e-4)
        assert torch.allclose(g_big, g_mixed, atol=1e-7, rtol=1e-4)
    # The normalisation is what makes them equal: averaging each micro-batch's own mean gives another gradient.
    peft_model.zero_grad()
    for ex in examples:
        loss, count = completion_loss_sums(peft_model, *collate([ex], tok.pad_token_id))
        (loss / count / len(examples)).backward()
    naive = [p.grad for p in peft_model.parameters() if p.requires_grad]
    assert max((a - b).abs().max().item() for a, b in zip(naive, big[2])) > 1e-4


def test_train_with_accumulation_matches_big_batch_end_to_end(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=8)
    outputs = {}
    for batch_size, grad_accum in ((8, 1), (1, 8)):
        model, tok = fresh_tiny()
        config = TrainConfig(batch_size=batch_size, grad_accum=grad_accum, max_steps=3, eval_split=0.0,
                             lora_dropout=0.0, learning_rate=1e-3, checkpoint_every=0)
        out = tmp_path / f"bs{batch_size}"
        train(config, data, out, model=model, tokenizer=tok)
        outputs[batch_size] = lora_weights(out)
    assert_same_weights(outputs[8], outputs[1])
    assert any(v.abs().max() > 0 for k, v in outputs[8].items() if "lora_B" in k)  # it did train


# ---------------------------------------------------------------- output and provenance


def test_adapter_loads_with_plain_peft_and_records_provenance(tmp_path):
    from peft import PeftModel

    from tunelens.model.specs import ModelLoadError
    from tunelens.model.load import attach_adapter
    from tunelens.model.state import weights_fingerprint

    data = write_pairs(tmp_path / "pairs.jsonl", n=10)
    model, tok = fresh_tiny("llama")
    base_hash = weights_fingerprint(model)
    events = []
    config = TrainConfig(batch_size=2, max_steps=4, eval_split=0.2, eval_every=2, lora_dropout=0.0,
                         learning_rate=1e-3, checkpoint_every=0)
    steps = []  # the one progress shape: (what, done, total)
    result = train(config, data, tmp_path / "adapter", model=model, tokenizer=tok, on_event=events.append,
                   progress=lambda *call: steps.append(call))
    out = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "tunelens.json"} <= {p.name for p in out.iterdir()}
    provenance = json.loads((out / "tunelens.json").read_text())
    assert provenance["base_weights_hash"] == base_hash
    assert provenance["base_model"] == "tiny-llama-seed0"
    assert provenance["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert (provenance["data"]["pairs"], provenance["data"]["train"], provenance["data"]["eval"]) == (10, 8, 2)
    assert provenance["config"]["learning_rate"] == 1e-3 and provenance["tunelens_version"]
    assert (result.n_train, result.n_eval, result.steps) == (8, 2, 4)
    assert [e.phase for e in events] == ["start", "step", "step", "eval", "step", "step", "eval", "done"]
    assert steps == [("train", 0, 4), ("train", 1, 4), ("train", 2, 4), ("train", 3, 4), ("train", 4, 4),
                     ("train", 4, 4)]
    assert [step for step, _ in result.eval_losses] == [2, 4]

    # Plain PEFT loads it, onto a fresh copy of the same base, and gives the trained model's logits.
    fresh, _ = fresh_tiny("llama")
    loaded = PeftModel.from_pretrained(fresh, str(out)).eval()
    ids = torch.tensor([[1, 5, 9, 30, 41]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, result.model(ids).logits, atol=1e-6)

    # tunelens' loader refuses other base weights, naming both hashes.
    other, _ = fresh_tiny("llama", seed=1)
    with pytest.raises(ModelLoadError, match=f"trained on base weights {base_hash[:12]}"):
        attach_adapter(other, out)
    same, _ = fresh_tiny("llama")
    with torch.no_grad():  # and loads it onto the same base weights, giving the trained model's logits
        assert torch.allclose(attach_adapter(same, out)(ids).logits, result.model(ids).logits, atol=1e-6)


def test_bad_inputs_are_user_errors(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(chat("a", "b")) + "\n" + '{"messages": [{"role": "user"}]}\n')
    model, tok = fresh_tiny()
    config = TrainConfig(max_steps=1, eval_split=0.0)
    with pytest.raises(UserError, match=r"bad.jsonl:2"):
        train(config, bad, tmp_path / "a", model=model, tokenizer=tok)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not an adapter directory"):
        train(config, data, tmp_path / "notes", model=model, tokenizer=tok)
    with pytest.raises(UserError, match="qkv_proj match no linear layer"):
        placement_table(model, TrainConfig(target_modules=("q_proj", "qkv_proj")))
    with pytest.raises(UserError, match="every pair's prompt is longer than max_length=4"):
        train(TrainConfig(max_steps=1, max_length=4), data, tmp_path / "b", model=model, tokenizer=tok)


def test_placement_table_counts_lora_parameters_by_hand():
    model, _tok = fresh_tiny("llama")  # hidden 64, intermediate 128, 2 heads x 32, 1 kv head x 32, 2 layers
    placement = placement_table(model, TrainConfig(lora_r=4))
    by_kind = {row.kind: row for row in placement.rows}
    assert (by_kind["q_proj"].in_features, by_kind["q_proj"].out_features) == (64, 64)
    assert (by_kind["k_proj"].in_features, by_kind["k_proj"].out_features) == (64, 32)
    assert by_kind["down_proj"].lora_params == 2 * 4 * (128 + 64)
    # per layer: q 4*(64+64) + k,v 2*4*(64+32) + o 4*(64+64) + gate,up 2*4*(64+128) + down 4*(128+64)
    assert placement.trainable_params == 2 * (512 + 768 + 512 + 1536 + 768)
    assert len(placement.module_names) == 14 and placement.kv_shared_layers == ()


def test_gradient_checkpointing_gives_the_same_adapter(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=4)
    weights, losses = [], []
    for checkpointing in (False, True):
        model, tok = fresh_tiny()
        config = TrainConfig(batch_size=2, max_steps=2, eval_split=0.0, lora_dropout=0.0, learning_rate=1e-3,
                             checkpoint_every=0, gradient_checkpointing=checkpointing)
        out = tmp_path / f"gc-{checkpointing}"
        result = train(config, data, out, model=model, tokenizer=tok)
        weights.append(lora_weights(out))
        losses.append([row["loss"] for row in read_metrics(result.metrics_path)])
    assert_same_weights(*weights, atol=1e-6)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and len(losses[0]) == 2


@pytest.mark.slow
def test_embedded_model_trains_two_steps_and_reloads(tmp_path):
    from tunelens.model.load import load_model

    data = write_pairs(tmp_path / "pairs.jsonl", n=4)
    config = TrainConfig(batch_size=2, max_steps=2, eval_split=0.25, max_length=96, checkpoint_every=0)
    result = train(config, data, tmp_path / "adapter", model_spec="gemma3-270m")
    assert result.placement.num_layers == 18 and len(result.placement.module_names) == 18 * 7
    assert result.eval_loss is not None and result.eval_loss == result.eval_loss  # not NaN
    tuned, _tok = load_model("gemma3-270m", adapter=tmp_path / "adapter", device="cpu")
    assert hasattr(tuned, "peft_config")
