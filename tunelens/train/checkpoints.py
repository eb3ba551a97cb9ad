"""Resumable checkpoints: `<out>-checkpoints/step-NNNNNNN/` with the adapter weights, optimizer and
scheduler state, and `trainer_state.json` (written last, so a directory without it is not a checkpoint).

Each checkpoint is built in a staging directory and swapped in whole (`tunelens.io.atomic_directory`);
staging directories left by a killed run are removed when the next run starts.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tunelens.errors import UserError
from tunelens.io import atomic_directory, remove_staging_dirs, staging_dirs_of
from tunelens.train.config import RESUME_FREE_FIELDS

CHECKPOINT_STATE = "trainer_state.json"


def checkpoint_root(out_dir: Path) -> Path:
    """Checkpoints live beside the adapter (`<out>-checkpoints/`), so the adapter dir stays pure PEFT."""
    return out_dir.parent / f"{out_dir.name}-checkpoints"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under `root`, oldest first."""
    found = [(re.fullmatch(r"step-(\d+)", path.name), path) for path in root.iterdir()] if root.is_dir() else []
    return sorted((int(match.group(1)), path) for match, path in found
                  if match and (path / CHECKPOINT_STATE).is_file())


def save_checkpoint(root: Path, step: int, peft_model, optimizer, scheduler, meta: dict, keep: int) -> Path:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    final = root / f"step-{step:07d}"
    with atomic_directory(final) as staging:
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
        save_file(weights, staging / "adapter_weights.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   staging / "optimizer.pt")
        (staging / CHECKPOINT_STATE).write_text(json.dumps({**meta, "step": step}, indent=2))  # last
    for _old_step, old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, meta: dict, peft_model, optimizer, scheduler) -> None:
    """Restore a checkpoint, after refusing one made from other data, other base weights or another config
    (but RESUME_FREE_FIELDS)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((path / CHECKPOINT_STATE).read_text())
    if state.get("data_sha256") != meta["data_sha256"]:
        raise UserError(f"checkpoint {path} was made from other training data (hash differs): "
                        "resume with the same data file, or start afresh without --resume")
    if state.get("base_weights_hash") != meta["base_weights_hash"]:
        raise UserError(f"checkpoint {path} was made on other base weights: resume with the same model")
    for key, value in meta["config"].items():
        if key not in RESUME_FREE_FIELDS and state["config"].get(key) != value:
            raise UserError(f"checkpoint {path} was made with {key}={state['config'].get(key)!r}, "
                            f"this run has {key}={value!r}: resume with the same config")
    set_peft_model_state_dict(peft_model, load_file(path / "adapter_weights.safetensors"))
    states = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])


def remove_abandoned_staging(root: Path, out_dir: Path) -> list[Path]:
    """Delete the staging directories (`.<name>.tmp-XXXX`, `.<name>.old-XXXX`) a run killed while writing a
    checkpoint or the adapter left in `root` and beside `out_dir`. Only safe because a run owns its `--out`."""
    removed = [path for path in root.iterdir() if path.name.startswith(".step-")] if root.is_dir() else []
    return remove_staging_dirs(removed) + remove_staging_dirs(staging_dirs_of(out_dir))
