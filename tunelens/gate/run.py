"""The gate stage's entry points as the commands call them: calibrate from files, route one query. Each
loads what it needs (the gate, and the model when model signals are asked for); printing is the command's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tunelens.errors import UserError
from tunelens.gate.calibration import Calibration, calibrate
from tunelens.gate.failure import OutcomeCalibration, calibrate_on_outcomes
from tunelens.gate.options import GateCalibrateConfig, RouteConfig
from tunelens.gate.outcomes import read_outcomes
from tunelens.gate.queries import read_queries
from tunelens.gate.routing import Decision, Gate
from tunelens.model.load import LoadedModel
from tunelens.runtime import Progress


def _load_model(model: str | None, adapter: str | Path | None, device: str) -> tuple:
    """(model, tokenizer, what a calibration records of them); all None without a model."""
    if adapter is not None and model is None:
        raise UserError("--adapter needs --model: the base model the adapter was trained on")
    if model is None:
        return None, None, None
    loaded = LoadedModel.load(model, adapter, device=device)
    return loaded.model, loaded.tokenizer, {"model": loaded.spec, "adapter": loaded.adapter_dir}


def calibrate_from_files(gate_dir: str | Path, config: GateCalibrateConfig, results: Sequence[Path] = (),
                         in_domain: Path | None = None, out_of_domain: Path | None = None,
                         model: str | None = None, adapter: str | Path | None = None,
                         progress: Progress | None = None, on_unpaired=None) -> Calibration | OutcomeCalibration:
    """`tunelens gate calibrate`: on eval outcomes (`results`) or on in- vs out-of-domain query files.
    `on_unpaired(counts)` hears of cases with an answer from only one of adapter and base (left out)."""
    if bool(results) == (in_domain is not None or out_of_domain is not None):
        raise UserError("calibrate either on eval outcomes (--results) or on --in-domain and --out-of-domain queries")
    if not results and (in_domain is None or out_of_domain is None):
        raise UserError("in/out-of-domain calibration needs both --in-domain and --out-of-domain")
    gate = Gate.load(gate_dir)
    model_obj, tokenizer, info = _load_model(model, adapter, config.device)
    if results:
        outcomes, counts = read_outcomes(list(results), decoding=config.decoding)
        if counts["unpaired"] and on_unpaired is not None:
            on_unpaired(counts)
        neither = config.target_risk is None and config.target_coverage is None
        inputs = {"results": [str(p) for p in results], "decoding": config.decoding,
                  **{k: counts[k] for k in ("cases", "paired")}}
        return calibrate_on_outcomes(gate, outcomes, model_obj, tokenizer,
                                     target_risk=0.05 if neither else config.target_risk,
                                     target_coverage=config.target_coverage, holdout=config.holdout, seed=config.seed,
                                     progress=progress, model_info=info, inputs=inputs)
    inputs = {"in_domain": str(in_domain), "out_of_domain": str(out_of_domain)}
    return calibrate(gate, read_queries(in_domain), read_queries(out_of_domain), model_obj, tokenizer,
                     target_coverage=0.95 if config.target_coverage is None else config.target_coverage,
                     progress=progress, model_info=info, inputs=inputs)


def route_query(gate_dir: str | Path, query: str, config: RouteConfig, model: str | None = None,
                adapter: str | Path | None = None) -> Decision:
    """`tunelens route`: where one query goes. A gate calibrated with model signals scores with the model
    and adapter calibration recorded, unless others are given."""
    gate = Gate.load(gate_dir)
    recorded = (gate.calibration.model or {}) if gate.calibration else {}
    if model is None and recorded.get("model"):
        model, adapter = recorded["model"], adapter or recorded.get("adapter")
    model_obj, tokenizer, _ = _load_model(model, adapter, config.device)
    return gate.route(query, model_obj, tokenizer)
