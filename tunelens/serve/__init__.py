"""An OpenAI-compatible HTTP server for a model, its LoRA adapter and the retrieval gate.

POST /v1/completions and /v1/chat/completions (streamed or not, with OpenAI's `logprobs`), GET /v1/models,
/healthz and /metrics. Models: `tunelens-adapter`, `tunelens-base` (adapter off) and `auto` (the gate
decides per request); every response's `tunelens` field says the route taken and why. All model work
runs on one worker thread (engine.py), waiting requests decode together (batching.py); with an upstream
engine such as vLLM (upstream.py) no model loads and only the gate runs here. Bad input is a 4xx in
OpenAI's error shape (docs/serve.md), a failure a 500 in it.

The names below load their module on first use, so reading `tunelens serve`'s options (config.py) does
not import FastAPI.
"""

import importlib

_HOMES = {
    "create_app": "app", "MODEL_ADAPTER": "engine", "MODEL_AUTO": "engine", "MODEL_BASE": "engine",
    "Engine": "engine", "Job": "jobs", "Outcome": "jobs", "run_job": "jobs", "API_KEY_ENV": "running",
    "ServerHandle": "running", "serve": "running", "start_in_thread": "running", "APIError": "schemas",
    "ServeLimits": "schemas", "StopText": "stops", "UPSTREAM_API_KEY_ENV": "upstream", "Upstream": "upstream",
    "UpstreamEngine": "upstream",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'tunelens.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tunelens.serve.{_HOMES[name]}"), name)
