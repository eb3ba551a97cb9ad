"""Training rules shared by the demo and the studies: the same LoRA settings from any of their configs, an
adapter on disk reused only when trained on the same data, and one token budget for mined pairs."""

from __future__ import annotations

import json
from pathlib import Path

from tunelens.errors import UserError
from tunelens.hashing import file_sha256
from tunelens.model.prompts import encode_pair
from tunelens.train.config import TrainConfig
from tunelens.train.run import train


def train_config(config, seed: int | None = None) -> TrainConfig:
    """The training settings of a config with epochs, learning_rate, batch_size, max_length and seed."""
    return TrainConfig(epochs=config.epochs, learning_rate=config.learning_rate, batch_size=config.batch_size,
                       max_length=config.max_length, eval_split=0.0, checkpoint_every=0,
                       seed=config.seed if seed is None else seed)


def trained_on(adapter_dir: Path, data_path: Path) -> bool:
    """Whether an earlier invocation trained the adapter on exactly this data. One trained on other data (the
    mined pool changes with the installed packages) would mix two runs: an error, not a reuse."""
    record = adapter_dir / "tunelens.json"
    if not ((adapter_dir / "adapter_config.json").is_file() and record.is_file()):
        return False
    if json.loads(record.read_text()).get("data", {}).get("sha256") != file_sha256(data_path):
        raise UserError(f"{adapter_dir} was trained on other data than {data_path} holds now (the mined pool "
                        "changes with the installed packages): use another --out, or delete the directory")
    return True


def train_unloaded(config, data_path: Path, adapter_dir: Path, model, tokenizer, progress, seed: int | None = None,
                   model_spec: str | None = None):
    """Train one adapter (unless trained_on) and return the base model without LoRA layers."""
    if trained_on(adapter_dir, data_path):
        return model
    result = train(train_config(config, seed), data_path, adapter_dir, model=model, tokenizer=tokenizer,
                   model_spec=model_spec or getattr(model.config, "tunelens_spec", None) or config.model,
                   progress=progress)
    return result.model.unload()


def fits_tokens(tokenizer, limit: int, room: int = 0):
    """Predicate on a pair record: its prompt and answer take at most `limit` tokens with `room` to spare."""
    def fits(record: dict) -> bool:
        messages = record["messages"]
        ids, _ = encode_pair(tokenizer, messages[0]["content"], messages[-1]["content"])
        return len(ids) + room <= limit

    return fits
