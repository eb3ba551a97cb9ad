"""An OpenAI-compatible HTTP server for a model, its LoRA adapter and the retrieval gate.

Endpoints: POST /v1/completions and /v1/chat/completions (streamed as server-sent events or not, with
`logprobs`/`top_logprobs` in OpenAI's format), GET /v1/models, /healthz and /metrics (Prometheus text).

Model names: `tunelens-adapter` (the adapter), `tunelens-base` (adapter switched off) and `auto` (the
gate decides per request). Every response carries a `tunelens` field with the route taken and, for
`auto`, the gate's scores and threshold.

All model work runs on one worker thread (serve/engine.py); requests waiting for it decode together
as one batch (serve/batching.py), and a lone request takes the shared decode loop of
tunelens.inference. Bad input of any kind is a 4xx in OpenAI's error shape (docs/serve.md lists the
cases); an unexpected failure is a 500 in the same shape.

With an upstream engine (serve/upstream.py) no model loads: the gate decides here and the requests go
to an OpenAI-compatible engine such as vLLM with LoRA modules.

Modules: schemas (limits, request fields, errors), stops (stop strings), engine (the model thread),
batching (several requests in one decode loop), upstream (forwarding to another engine), responses
(OpenAI's response shapes), app (endpoints and request checks), running (uvicorn), config (the
command's options), fewshot (examples per request).

The names below load their module on first use, so reading `tunelens serve`'s options (serve/config.py)
does not import FastAPI.
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
