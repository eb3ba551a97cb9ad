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
(OpenAI's response shapes), app (endpoints and request checks), running (uvicorn).
"""

from tunelens.serve.app import create_app
from tunelens.serve.engine import MODEL_ADAPTER, MODEL_AUTO, MODEL_BASE, Engine, Job, Outcome, run_job
from tunelens.serve.running import API_KEY_ENV, ServerHandle, serve, start_in_thread
from tunelens.serve.schemas import APIError, ServeLimits
from tunelens.serve.stops import StopText
from tunelens.serve.upstream import UPSTREAM_API_KEY_ENV, Upstream, UpstreamEngine

__all__ = ["API_KEY_ENV", "APIError", "Engine", "Job", "MODEL_ADAPTER", "MODEL_AUTO", "MODEL_BASE", "Outcome",
           "ServeLimits", "ServerHandle", "StopText", "UPSTREAM_API_KEY_ENV", "Upstream", "UpstreamEngine",
           "create_app", "run_job", "serve", "start_in_thread"]
