"""An adapter that travels: plain PEFT finds and loads its base, its tokenizer and chat template come along."""

import copy
import json

import pytest
import torch

from tunelens.model.adapters import ADAPTER_CONFIG, PROVENANCE_FILE, write_adapter
from tunelens.model.specs import ModelLoadError
from tunelens.model.load import attach_adapter
from tunelens.model.state import weights_fingerprint
from tunelens.model.prompts import render_pair, render_prompt

# Tiny models run far faster on one thread, above all on a busy shared CPU.
pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[2, 5, 9, 30, 41, 7]])


def _perturbed_lora(model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return peft_model.eval()


@pytest.fixture
def written(tmp_path, tiny_model_dir, tiny_llama):
    """A tuned copy of the tiny Llama, written as tunelens writes a trained adapter of a local base."""
    base, _ = tiny_llama
    tuned = _perturbed_lora(copy.deepcopy(base))
    provenance = {"base_model": str(tiny_model_dir), "base_weights_hash": weights_fingerprint(base)}
    return write_adapter(tmp_path / "adapter", tuned, provenance), tuned


def test_plain_peft_loads_it_on_a_user_loaded_base(written, tiny_model_dir):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, tuned = written
    with torch.no_grad():
        expected = tuned(IDS).logits
        user_base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
        loaded = PeftModel.from_pretrained(user_base, str(adapter)).eval()
        assert torch.allclose(loaded(IDS).logits, expected, atol=1e-6)
        # The config names the base, so PEFT's auto class finds it with no base given at all.
        auto = AutoPeftModelForCausalLM.from_pretrained(str(adapter)).eval()
        assert torch.allclose(auto(IDS).logits, expected, atol=1e-6)
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    # The base's tokenizer is beside the adapter, and it is the same tokenizer.
    assert AutoTokenizer.from_pretrained(str(adapter))("def add(a, b):")["input_ids"] == \
        AutoTokenizer.from_pretrained(str(tiny_model_dir))("def add(a, b):")["input_ids"]


def test_a_wrong_base_is_still_refused_by_tunelens(written):
    from tunelens.testing import tiny_model

    adapter, _ = written
    other, _ = tiny_model("llama", seed=1)
    with pytest.raises(ModelLoadError, match="trained on base weights"):
        attach_adapter(other, adapter)


def test_embedded_base_is_recorded_by_its_hub_id(tmp_path, tiny_gemma):
    model, tokenizer = tiny_gemma
    provenance = {"base_model": "gemma3-270m", "base_weights_hash": "ab" * 32}
    adapter = write_adapter(tmp_path / "adapter", _perturbed_lora(copy.deepcopy(model)), provenance, tokenizer)
    assert json.loads((adapter / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "google/gemma-3-270m"
    recorded = json.loads((adapter / PROVENANCE_FILE).read_text())
    assert recorded["base_model"] == "gemma3-270m" and recorded["base_weights_hash"] == "ab" * 32
    assert recorded["base_model_hub_id"] == "google/gemma-3-270m" and "Q4_K_M" in recorded["base_weights_note"]
    assert "base_model: google/gemma-3-270m" in (adapter / "README.md").read_text()


def test_saved_chat_template_prompts_as_tunelens_trained(tmp_path, tiny_gemma):
    """Gemma 3 base has no chat template; the saved one reproduces tunelens's turn format exactly."""
    from transformers import AutoTokenizer

    _, tokenizer = tiny_gemma
    assert not tokenizer.chat_template
    model, _ = tiny_gemma
    write_adapter(tmp_path / "adapter", _perturbed_lora(copy.deepcopy(model)), {"base_model": "x"}, tokenizer)
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "adapter"))
    assert not tokenizer.chat_template  # the caller's tokenizer is left as it was
    user = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add two numbers."}]
    assert saved.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == \
        render_prompt(tokenizer, "Add two numbers.", system="Be brief.")
    pair = user + [{"role": "assistant", "content": "def add(a, b):\n    return a + b\n"}]
    assert saved.apply_chat_template(pair, tokenize=False) == \
        render_pair(tokenizer, "Add two numbers.", "def add(a, b):\n    return a + b\n", system="Be brief.")


def test_plain_format_template_for_a_tokenizer_without_turn_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from tunelens.model.adapters import save_tokenizer
    from tunelens.model.prompts import prompt_style

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(["def f(x):\n    return x\n"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert prompt_style(tokenizer).kind == "plain"
    save_tokenizer(tokenizer, tmp_path)
    saved = AutoTokenizer.from_pretrained(str(tmp_path))
    pair = [{"role": "user", "content": "Return x."}, {"role": "assistant", "content": "def f(x):\n    return x"}]
    expected = render_pair(tokenizer, "Return x.", "def f(x):\n    return x")
    assert saved.apply_chat_template(pair, tokenize=False) == expected


def test_train_writes_the_tokenizer_and_base_path(tmp_path, tiny_model_dir):
    """The trainer's own output, for a base given as a directory: portable with no extra step."""
    from tunelens.train.config import TrainConfig
    from tunelens.train.run import train

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Add {i}."},
                                                     {"role": "assistant", "content": f"x + {i}"}]}) + "\n"
                            for i in range(4)))
    config = TrainConfig(batch_size=2, max_steps=1, eval_split=0.0, lora_r=2, checkpoint_every=0)
    train(config, data, tmp_path / "adapter", model_spec=str(tiny_model_dir))
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "tokenizer.json", "chat_template.jinja", PROVENANCE_FILE} <= files, files
    config_json = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert config_json["base_model_name_or_path"] == str(tiny_model_dir.resolve())


def test_saved_gemma_template_renders_a_conversation(tmp_path, tiny_gemma):
    """Multi-turn: the system text opens the first user turn, every turn is closed, the model's turn is open."""
    from transformers import AutoTokenizer

    from tunelens.model.adapters import save_tokenizer

    save_tokenizer(tiny_gemma[1], tmp_path)
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
                    {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    rendered = AutoTokenizer.from_pretrained(str(tmp_path)).apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True)
    assert rendered == ("<bos><start_of_turn>user\nS\n\nU1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
                        "<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\n")
