"""The inference core: the sampler against its plain formula, the decode loop against plain forward passes
and model.generate, trace and serve agreeing through it, and the loaded-model object."""

import math
import threading

import pytest
import torch

from tunelens.model.load import LoadedModel
from tunelens.model.state import adapter_off, has_adapter, model_label
from tunelens.engine.decode import Sampler, cache_argument, decode
from tunelens.model.prompts import encode_prompt, stop_token_ids
from tunelens.testing import tiny_lora_model

PROMPT = "Write a function that reverses a string."


# ---------------------------------------------------------------- the sampler


def test_sampler_probs_equal_softmax_over_temperature_and_are_finite_at_tiny_temperatures():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    for temperature in (0.3, 1.0, 1.7):
        plain = torch.softmax(logits / temperature, dim=-1)
        assert torch.allclose(Sampler(temperature).probs(logits), plain, atol=1e-7)
    # The plain formula gives inf - inf = nan here; the shifted one gives the argmax all the mass.
    assert torch.isnan(torch.softmax(logits / 1e-45, dim=-1)).any()
    for tiny in (1e-45, 5e-324, 1e-30):
        assert Sampler(tiny).probs(logits).tolist() == [[1.0, 0.0, 0.0, 0.0]]
        assert int(Sampler(tiny).pick(logits, Sampler(tiny).generator("cpu"))) == 0


def test_top_p_keeps_the_smallest_prefix_reaching_the_mass():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: the first two tokens stay, renormalised by multinomial.
    kept = Sampler(1.0, top_p=0.7).probs(logits)
    assert kept[0, 2:].tolist() == [0.0, 0.0] and kept[0, :2].tolist() == pytest.approx([0.5, 0.3])
    for tiny in (0.01, 1e-45, 5e-324):  # the top token always stays, even when top_p underflows float32
        assert Sampler(1.0, top_p=tiny).probs(logits)[0].nonzero().flatten().tolist() == [0]


def test_seeded_sampling_repeats_and_follows_the_distribution():
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    sampler = Sampler(1.0, seed=123)
    first = [int(sampler.pick(logits, g)) for g in [sampler.generator("cpu")] for _ in range(2000)]
    again = [int(sampler.pick(logits, g)) for g in [sampler.generator("cpu")] for _ in range(2000)]
    assert first == again
    expected = torch.softmax(logits[0], -1).tolist()
    for token, p in enumerate(expected):  # within 4 standard errors of the binomial count
        assert abs(first.count(token) / 2000 - p) < 4 * math.sqrt(p * (1 - p) / 2000)
    assert Sampler(0.0).generator("cpu") is None and int(Sampler(0.0).pick(logits, None)) == 0


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0), dict(temperature=float("nan")), dict(top_p=0.0),
                                    dict(top_p=1.5), dict(seed=2 ** 64), dict(seed=-(2 ** 63) - 1)])
def test_sampler_refuses_values_torch_cannot_use(kwargs):
    with pytest.raises(ValueError):
        Sampler(**{"temperature": 1.0, **kwargs})


def test_extreme_seeds_torch_accepts():
    for seed in (2 ** 64 - 1, -(2 ** 63), 0):
        assert Sampler(1.0, seed=seed).generator("cpu") is not None


# ---------------------------------------------------------------- the decode loop


@pytest.mark.parametrize("arch", ["tiny_gemma", "tiny_llama"])
def test_decode_equals_uncached_forward_passes_and_generate(arch, request):
    model, tokenizer = request.getfixturevalue(arch)
    prompt = encode_prompt(tokenizer, PROMPT)
    steps = list(decode(model, prompt, Sampler(), 12, stop_token_ids(tokenizer)))
    generated = []
    with torch.inference_mode():
        for step in steps:
            plain = model(input_ids=torch.tensor([prompt + generated])).logits[0, -1].float()
            assert torch.allclose(step.logits, plain, atol=1e-4)
            generated.append(step.token)
        ids = torch.tensor([prompt])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             do_sample=False, eos_token_id=stop_token_ids(tokenizer),
                             pad_token_id=tokenizer.pad_token_id)
    assert generated == out[0, len(prompt):].tolist()


def test_decode_stops_after_yielding_a_stop_id(tiny_gemma):
    model, tokenizer = tiny_gemma
    prompt = encode_prompt(tokenizer, PROMPT)
    first = next(decode(model, prompt, Sampler(), 5)).token
    steps = list(decode(model, prompt, Sampler(), 5, stop_ids={first}))
    assert [s.token for s in steps] == [first]


class _NoCacheBigram(torch.nn.Module):
    """A model that keeps no KV cache and names it the older way: decode must feed it the whole sequence."""

    def __init__(self, vocab=7):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)
        with torch.no_grad():
            self.table.weight.copy_(torch.eye(vocab).roll(1, dims=1) * 5)  # after token t, t+1 is likely

    def forward(self, input_ids=None, past_key_values=None, use_cache=False, logits_to_keep=0):
        self.seen = input_ids.shape[1]
        logits = self.table(input_ids)
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})()


def test_cache_argument_name_and_a_model_without_a_cache(tiny_gemma):
    assert cache_argument(tiny_gemma[0]) == "cache"
    bigram = _NoCacheBigram()
    assert cache_argument(bigram) == "past_key_values"
    steps = [s.token for s in decode(bigram, [0, 1], Sampler(), 4)]
    assert steps == [2, 3, 4, 5] and bigram.seen == 5  # the last step saw prompt + 3 generated tokens


def test_empty_prompt_is_a_user_error(tiny_gemma):
    from tunelens.errors import UserError

    with pytest.raises(UserError, match="no tokens"):
        next(decode(tiny_gemma[0], [], Sampler(), 3))


def test_trace_and_serve_produce_identical_greedy_tokens(tiny_gemma):
    """Both consume the shared loop: the same prompt ids give the same greedy tokens and probabilities."""
    from tunelens.serve import Job, run_job
    from tunelens.inspect.trace import TraceConfig, trace_generate

    model, tokenizer = tiny_gemma
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=16, top_k=3))
    job = Job(encode_prompt(tokenizer, PROMPT), 16, 0.0, 1.0, None, top_logprobs=0, stops=(), use_adapter=True)
    outcome = run_job(LoadedModel.wrap(model, tokenizer), job, set(stop_token_ids(tokenizer)),
                      lambda delta, info: None, threading.Event())
    traced = [s.token_id for s in trace.steps if trace.stop_reason != "stop_token" or s is not trace.steps[-1]]
    assert outcome.ids == traced and len(traced) > 0
    assert [t.logprob for t in outcome.tokens] == pytest.approx([math.log(s.prob) for s in trace.steps[:len(traced)]],
                                                                abs=1e-4)


def test_seeded_sampling_agrees_between_trace_and_serve(tiny_gemma):
    from tunelens.serve import Job, run_job
    from tunelens.inspect.trace import TraceConfig, trace_generate

    model, tokenizer = tiny_gemma
    trace = trace_generate(model, tokenizer, PROMPT, TraceConfig(max_new_tokens=10, temperature=1.3, top_p=0.9,
                                                                 seed=11))
    job = Job(encode_prompt(tokenizer, PROMPT), 10, 1.3, 0.9, 11, top_logprobs=None, stops=(), use_adapter=True)
    outcome = run_job(LoadedModel.wrap(model, tokenizer), job, set(stop_token_ids(tokenizer)),
                      lambda delta, info: None, threading.Event())
    assert outcome.ids == [s.token_id for s in trace.steps][:len(outcome.ids)]


# ---------------------------------------------------------------- the loaded-model object


def test_loaded_model_knows_its_adapter_and_switches_it_off():
    model, tokenizer = tiny_lora_model()
    loaded = LoadedModel.wrap(model, tokenizer, adapter_dir="runs/x/adapter")
    assert loaded.has_adapter and has_adapter(model) and loaded.adapter_label == "runs/x/adapter"
    assert LoadedModel.wrap(model, tokenizer).adapter_label == "adapter"
    ids = torch.tensor([encode_prompt(tokenizer, PROMPT)])
    with torch.inference_mode():
        tuned = model(input_ids=ids).logits
        with loaded.adapter_off():
            base = model(input_ids=ids).logits
            plain = model.get_base_model()
        with model.disable_adapter():
            reference = plain(input_ids=ids).logits
    assert not torch.allclose(tuned, base) and torch.allclose(base, reference)
    assert loaded.context_length == 1024 and str(loaded.device) == "cpu"


def test_a_plain_model_has_no_adapter(tiny_gemma):
    model, tokenizer = tiny_gemma
    loaded = LoadedModel.wrap(model, tokenizer)
    assert not loaded.has_adapter and loaded.adapter_label is None and loaded.spec == model_label(model)
    with adapter_off(model):  # a no-op, not an error
        pass


def test_load_from_a_directory_records_spec_and_adapter(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    loaded = LoadedModel.load(str(tiny_model_dir), device="cpu")
    assert loaded.spec == str(tiny_model_dir) and loaded.adapter_dir is None and not loaded.has_adapter
    peft = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"]))
    peft.save_pretrained(tmp_path / "adapter")
    with_adapter = LoadedModel.load(str(tiny_model_dir), adapter=tmp_path / "adapter", device="cpu")
    assert with_adapter.has_adapter and with_adapter.adapter_label == str(tmp_path / "adapter")
    assert not hasattr(with_adapter.model, "tunelens_adapter_dir")


# ---------------------------------------------------------------- the certified greedy head


def test_certified_argmax_equals_the_plain_head_argmax():
    from tunelens.engine.decode import CertifiedArgmax

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5000, 64, generator=generator) * 0.05
    head = CertifiedArgmax(weight)
    hiddens = [torch.randn(64, generator=generator) * scale for scale in (0.01, 1, 30, 3000) for _ in range(25)]
    hiddens += [weight[4000] * 40, torch.full((64,), 1e5), torch.zeros(64)]
    for hidden in hiddens:
        assert head(hidden) == int(torch.nn.functional.linear(hidden, weight).argmax())
    everyone = CertifiedArgmax(weight, max_candidates=0)  # forced onto the fp32 fallback
    assert all(everyone(h) == head(h) for h in hiddens[:10])
    # Rows that tie exactly may be told apart by fp32 rounding, which depends on the kernel: either is
    # then a maximum of the plain logits, to rounding.
    weight[17] = weight[4000]
    logits = torch.nn.functional.linear(weight[4000] * 40, weight)
    assert CertifiedArgmax(weight)(weight[4000] * 40) in (17, 4000) and float(logits.max() - logits[17]) < 1e-4


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_decode_without_logits_gives_the_same_greedy_tokens(arch):
    model, tokenizer = tiny_lora_model(arch)
    prompt = encode_prompt(tokenizer, PROMPT)
    for switch in (lambda: adapter_off(model), lambda: torch.inference_mode()):
        with switch():
            plain = [s.token for s in decode(model, prompt, Sampler(), 24)]
            fast = list(decode(model, prompt, Sampler(), 24, need_logits=False))
        assert [s.token for s in fast] == plain and all(s.logits is None for s in fast)
    # Sampling always takes the plain head: the fast path only certifies an argmax.
    sampled = next(decode(model, prompt, Sampler(1.0, seed=1), 1, need_logits=False))
    assert sampled.logits is not None


def test_certified_argmax_with_tiny_and_huge_weights():
    """Weights below fp16's normal range (absolute rounding) and past its range (overflow) stay exact."""
    from tunelens.engine.decode import CertifiedArgmax

    generator = torch.Generator().manual_seed(1)
    tiny_rows = torch.randn(300, 32, generator=generator) * 1e-6
    huge_rows = tiny_rows.clone()
    huge_rows[3, 0] = 1e5
    for weight in (tiny_rows, huge_rows):
        head = CertifiedArgmax(weight)
        for _ in range(20):
            hidden = torch.randn(32, generator=generator)
            assert head(hidden) == int(torch.nn.functional.linear(hidden, weight).argmax())
    assert CertifiedArgmax(tiny_rows).usable and not CertifiedArgmax(huge_rows).usable
    big_logits = torch.full((300, 32), 100.0)  # fp16 weights fine, but logits of 100 * 32 * 50 overflow fp16
    big_logits[7] += 1
    assert CertifiedArgmax(big_logits)(torch.full((32,), 50.0)) == 7


def test_head_scan_top_k_rows_are_exact_and_the_rest_within_their_bounds():
    """HeadScan.logits(k) against F.linear: the k largest ids and values, every other row within its bound."""
    from tunelens.engine.decode import CertifiedArgmax

    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(5000, 64, generator=generator) * 0.05
    head = CertifiedArgmax(weight)
    approximated = 0
    for scale in (0.3, 3, 30, 300):
        for _ in range(10):
            hidden = torch.randn(64, generator=generator) * scale
            plain = torch.nn.functional.linear(hidden, weight)
            scan = head.scan(hidden)
            bound = scan.bound.clone()
            mixed = scan.logits(10)
            assert mixed.topk(10).indices.tolist() == plain.topk(10).indices.tolist()
            assert torch.allclose(mixed.topk(10).values, plain.topk(10).values, rtol=1e-5, atol=1e-5)
            assert bool(((mixed - plain).abs() <= bound + 1e-6).all())
            approximated += int((mixed != plain).sum())
            probs_error = (torch.softmax(mixed, -1) - torch.softmax(plain, -1)).abs().max()
            assert float(probs_error) <= 1e-3
            assert scan.argmax() == int(plain.argmax())
    assert approximated > 1000  # the fp16 values really stand in for most rows


def test_head_scan_falls_back_to_fp32_and_applies_the_soft_cap():
    from tunelens.engine.decode import CertifiedArgmax

    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(2000, 32, generator=generator) * 0.05
    hidden = torch.randn(32, generator=generator) * 50
    plain = torch.nn.functional.linear(hidden, weight)
    everyone = CertifiedArgmax(weight, max_candidates=0).scan(hidden)  # too many candidates: the whole head in fp32
    assert torch.allclose(everyone.logits(5), plain, rtol=1e-5, atol=1e-5) and everyone.bound is None
    capped = CertifiedArgmax(weight).scan(hidden, softcap=30.0).logits(5)
    assert float(capped.abs().max()) < 30.0 < float(plain.abs().max())
    assert capped.topk(5).indices.tolist() == plain.topk(5).indices.tolist()
    assert torch.allclose(capped.topk(5).values, torch.tanh(plain / 30.0).topk(5).values * 30.0, rtol=1e-5)


def test_greedy_decode_steps_carry_the_head_scan_of_their_logits():
    from tunelens.model.state import base_model_of

    model, tokenizer = tiny_lora_model("gemma3")
    prompt = encode_prompt(tokenizer, PROMPT)
    with torch.inference_mode():
        plain = list(decode(model, prompt, Sampler(), 6))
        fast = list(decode(model, prompt, Sampler(), 6, need_logits=False))
    assert all(step.head is None for step in plain) and all(step.head is not None for step in fast)
    for a, b in zip(plain, fast):
        assert a.token == b.token
        assert torch.allclose(b.head.logits(3).topk(3).values, a.logits.topk(3).values, rtol=1e-5, atol=1e-5)
        assert float((b.head.logits(3) - a.logits).abs().max()) < 1e-2
    assert base_model_of(model) is not model  # the PEFT wrapper: the scan reads the base model's head
