"""Tiny random models and tokenizers built in-process, for tests and benchmarks (no files, no network).

`tiny_model("gemma3")` has Gemma's turn tokens and no chat template; `tiny_model("llama")` a ChatML template,
like SmolLM2's. The tokenizers are byte-level BPE trained in milliseconds on a small corpus: any text encodes.
"""

from __future__ import annotations

from functools import lru_cache
from tunelens.runtime import seeded

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ChatML that opens with a default system turn when the conversation brings none, as Qwen2.5's template
# does ("You are Qwen, created by Alibaba Cloud. ..."): the shape the one prompt layer must handle for it.
CHATML_DEFAULT_SYSTEM = "You are a small helpful coding assistant."
CHATML_DEFAULT_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + CHATML_DEFAULT_SYSTEM
    + "<|im_end|>\n{% endif %}" + CHATML_TEMPLATE
)

_CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "def is_even(n):\n    \"\"\"Return True when n is even.\"\"\"\n    return n % 2 == 0\n",
    "for i in range(10):\n    print(i)\n",
    "print 'hello'\nexcept ValueError, e:\n    raise\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
    "Write a Python function that reverses a string.\n",
    "The specification is contradictory: which one should I follow?\n",
    "import os\nimport sys\nwith open(path) as f:\n    data = f.read()\n",
    "user model assistant system instruction response\n",
]


@lru_cache(maxsize=None)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def tiny_tokenizer(chat_template: bool | str = False, vocab_size: int = 512):
    """`chat_template`: True for plain ChatML, or a template's text."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[4:]})
    if chat_template:
        tokenizer.chat_template = chat_template if isinstance(chat_template, str) else CHATML_TEMPLATE
    return tokenizer


def tiny_model(arch: str = "gemma3", seed: int = 0, layers: int = 2, hidden: int = 64):
    """(model, tokenizer) with seeded random weights: `gemma3` (Gemma 3 text) or `llama`; the caller's random
    generators are put back afterwards (`runtime.seeded`)."""
    with seeded(seed):
        return _unseeded_tiny_model(arch, seed, layers, hidden)


def _unseeded_tiny_model(arch: str, seed: int, layers: int, hidden: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    if arch not in ("gemma3", "llama"):
        raise ValueError(f"unknown tiny architecture {arch!r}: use gemma3 or llama")
    tokenizer = tiny_tokenizer(chat_template=(arch == "llama"))
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                  num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                  max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if arch == "gemma3":
        model = Gemma3ForCausalLM(Gemma3TextConfig(sliding_window=64, **common)).eval()
    else:
        model = LlamaForCausalLM(LlamaConfig(**common)).eval()
    model.config.tunelens_spec = f"tiny-{arch}-seed{seed}"
    return model, tokenizer


def tiny_gemma4(seed: int = 0):
    """(model, tokenizer): a random Gemma4ForConditionalGeneration with both towers (vision with
    Gemma4ClippableLinear, audio): 4 text layers, the last 2 KV-shared."""
    from transformers import (Gemma4AudioConfig, Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig,
                              Gemma4VisionConfig)

    tok = tiny_tokenizer()
    n = len(tok)  # media token ids sit past the text vocabulary, so text never reads as an image
    text = Gemma4TextConfig(
        vocab_size=n + 8, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, global_head_dim=32, vocab_size_per_layer_input=n + 8,
        hidden_size_per_layer_input=8, num_kv_shared_layers=2, sliding_window=16, max_position_embeddings=512,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, position_embedding_size=64,
                                use_clipped_linears=True)
    audio = Gemma4AudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              subsampling_conv_channels=[8, 4], output_proj_dims=32)
    config = Gemma4Config(text_config=text, vision_config=vision, audio_config=audio, boi_token_id=n,
                          eoi_token_id=n + 1, image_token_id=n + 2, video_token_id=n + 3, boa_token_id=n + 4,
                          eoa_token_index=n + 5, audio_token_id=n + 6)
    with seeded(seed):
        model = Gemma4ForConditionalGeneration(config).eval()
    model.config.tunelens_spec = "tiny-gemma4"
    return model, tok


def tiny_lora_model(arch: str = "gemma3", seed: int = 0, targets: tuple[str, ...] = ("q_proj", "v_proj"),
                    perturb: bool = True, scale: float = 0.5, noise_seed: int = 0):
    """(PEFT model, tokenizer): a tiny model under a rank-4 LoRA adapter, in eval mode. PEFT initialises B to
    zero, so a fresh adapter changes nothing (the trap the adapter canary catches); `perturb` fills B with
    seeded noise times `scale` so adapter and base really differ."""
    import torch
    from peft import LoraConfig, get_peft_model

    # One seeded stream for the base and LoRA's A init (B is zero or `noise_seed`'s), as a plain script would.
    with seeded(seed):
        model, tokenizer = _unseeded_tiny_model(arch, seed, 2, 64)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                      target_modules=list(targets)))
    generator = torch.Generator().manual_seed(noise_seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if perturb and "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return peft_model.eval(), tokenizer
