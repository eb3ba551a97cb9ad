"""The one decode loop against `model.generate` (the only place library-independent generation is called),
and the one teacher-forced scorer against plain forward passes."""

import pytest
import torch

from tunelens.engine.decode import BatchDecoder, Row, Sampler, row_seed
from tunelens.engine.score import score_continuations

# Random ids past the special tokens: lengths 3, 17 and 90 (past the tiny Gemma 3's 64-token sliding window).
LENGTHS = (3, 17, 90)
NEW_TOKENS = 24


def _prompts(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(10, 470, (n,), generator=generator).tolist() for n in LENGTHS]


def _generate(model, prompts, stop_ids, pad_id):
    """model.generate greedy on the same left-padded batch; each row cut after its first stop id."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                             temperature=None, top_p=None, top_k=None, eos_token_id=list(stop_ids) or None,
                             pad_token_id=pad_id)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
        rows.append(row[:cut])
    return rows


@pytest.mark.parametrize("arch", ["tiny_gemma", "tiny_llama"])
def test_greedy_batch_is_token_identical_to_model_generate(arch, request):
    model, tokenizer = request.getfixturevalue(arch)
    prompts, pad = _prompts(), tokenizer.pad_token_id
    free = BatchDecoder(model, [Row(p, Sampler(), NEW_TOKENS) for p in prompts], pad_id=pad).run()
    # A stop id that ends the middle row early (its 5th token), so rows leave the batch at different steps.
    stop = free[1].ids[4]
    expected = _generate(model, prompts, {stop}, pad)
    rows = BatchDecoder(model, [Row(p, Sampler(), NEW_TOKENS, frozenset({stop})) for p in prompts], pad_id=pad).run()
    assert [row.ids for row in rows] == expected
    assert len(expected[1]) <= 5 and any(len(r) == NEW_TOKENS for r in expected)  # one stopped, one ran to the limit
    assert [row.ids for row in free] == _generate(model, prompts, set(), pad)


def test_a_lone_row_with_the_certified_head_matches_model_generate(tiny_gemma):
    model, tokenizer = tiny_gemma
    prompt = _prompts(1)[2]
    lone = BatchDecoder(model, [Row(prompt, Sampler(), NEW_TOKENS)], need_logits=False).run()[0]
    assert lone.ids == _generate(model, [prompt], set(), tokenizer.pad_token_id)[0]


def test_sampled_rows_are_reproducible_by_seed_and_independent_of_the_batch(tiny_gemma):
    model, tokenizer = tiny_gemma
    prompts = _prompts(2)

    def sampled(seeds, which=(0, 1, 2)):
        rows = [Row(prompts[i], Sampler(1.0, 0.95, seeds[i]), 12) for i in which]
        return [row.ids for row in BatchDecoder(model, rows, pad_id=tokenizer.pad_token_id).run()]

    first = sampled([5, 6, 7])
    assert sampled([5, 6, 7]) == first and sampled([5, 6, 8])[:2] == first[:2] and sampled([5, 6, 8])[2] != first[2]
    assert sampled([5, 6, 7], which=[1]) == [first[1]]  # each row draws from its own generator
    assert len({row_seed(s, i) for s in range(4) for i in range(4)}) == 16 and row_seed(None, 3) is None


def test_a_row_joining_mid_decode_answers_as_alone(tiny_gemma):
    model, tokenizer = tiny_gemma
    prompts = _prompts(3)
    alone = [BatchDecoder(model, [Row(p, Sampler(), 10)]).run()[0].ids for p in prompts]
    rows = [Row(p, Sampler(), 10) for p in prompts]
    decoder = BatchDecoder(model, rows[:2], pad_id=tokenizer.pad_token_id)
    decoder.step(), decoder.step()
    decoder.join(rows[2:])
    while decoder.step():
        pass
    assert [row.ids for row in rows] == alone


def test_score_continuations_equals_plain_forward_passes(tiny_gemma):
    model, _ = tiny_gemma
    prompts, continuations = _prompts(4), [[11, 12, 13], [40], [7, 8, 9, 10, 11, 12]]

    def plain(prompt, continuation):
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt + continuation])).logits[0, len(prompt) - 1:].float()
        return torch.log_softmax(logits, dim=-1)

    full = score_continuations(model, prompts, continuations, full=True)
    tokens = score_continuations(model, prompts, continuations)
    shared = score_continuations(model, [prompts[2]] * 3, continuations)  # one prefix pass, its cache shared
    for prompt, continuation, rows, values, same_prefix in zip(prompts, continuations, full, tokens, shared):
        reference = plain(prompt, continuation)
        assert rows.shape == reference.shape and torch.allclose(rows, reference, atol=1e-4)
        picked = reference[:-1].gather(1, torch.tensor(continuation)[:, None]).squeeze(1)
        assert torch.allclose(values, picked, atol=1e-4)
    for continuation, values in zip(continuations, shared):
        picked = plain(prompts[2], continuation)[:-1].gather(1, torch.tensor(continuation)[:, None]).squeeze(1)
        assert torch.allclose(values, picked, atol=1e-4)


def test_the_batched_certified_head_equals_the_plain_argmax():
    from tunelens.engine.decode import CertifiedArgmax

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5000, 64, generator=generator) * 0.05
    hidden = torch.cat([torch.randn(6, 64, generator=generator) * scale for scale in (0.01, 1, 30, 3000)]
                       + [weight[4000:4001] * 40, torch.zeros(1, 64)])
    plain = torch.nn.functional.linear(hidden, weight).argmax(-1)
    for bf16 in (True, False):
        assert torch.equal(CertifiedArgmax(weight).rows_argmax(hidden, bf16=bf16), plain)
    assert torch.equal(CertifiedArgmax(weight, max_candidates=0).rows_argmax(hidden, bf16=True), plain)
    # Rows that tie exactly may be told apart by fp32 rounding, which depends on the kernel: either wins.
    weight[17] = weight[4000]
    assert int(CertifiedArgmax(weight).rows_argmax(hidden[-2:], bf16=True)[0]) in (17, 4000)


@pytest.mark.parametrize("arch", ["tiny_gemma", "tiny_llama"])
def test_a_greedy_batch_without_logits_gives_the_same_tokens(arch, request):
    from tunelens.engine.decode import certified_head

    model, tokenizer = request.getfixturevalue(arch)
    prompts, pad = _prompts(5), tokenizer.pad_token_id
    plain = BatchDecoder(model, [Row(p, Sampler(), NEW_TOKENS) for p in prompts], pad_id=pad).run()
    head = certified_head(model)
    chosen, head.bf16_faster = head.bf16_faster, True  # the bfloat16 path, whatever this CPU prefers
    try:
        fast = BatchDecoder(model, [Row(p, Sampler(), NEW_TOKENS) for p in prompts], need_logits=False,
                            pad_id=pad).run()
    finally:
        head.bf16_faster = chosen
    assert [row.ids for row in fast] == [row.ids for row in plain]
