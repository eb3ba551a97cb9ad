"""Running the app: uvicorn with a per-request read deadline, in a thread (tests) or in the foreground."""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from pathlib import Path
from typing import Callable

from tunelens.errors import UserError
from tunelens.serve.schemas import ServeLimits
from tunelens.gate import Gate
from tunelens.model.load import LoadedModel
from tunelens.serve.app import create_app
from tunelens.serve.fewshot import FewShotServing
from tunelens.serve.upstream import check_gate_for_upstream, check_upstream_models

API_KEY_ENV = "TUNELENS_API_KEY"


def _deadline_protocol(read_timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request is not fully received in time. uvicorn's
    keep-alive timeout only covers the gap between requests: a client sending a byte at a time (or nothing)
    would hold the connection forever. The clock runs from the connection or a request's first byte to its
    last; generating and streaming the answer is not limited."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineProtocol(H11Protocol):
        _timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_clock()

        def _start_clock(self) -> None:
            self._timer = self._timer or self.loop.call_later(read_timeout, self._too_slow)

        def _stop_clock(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._start_clock()
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._stop_clock()

        def connection_lost(self, exc) -> None:
            self._stop_clock()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            self._timer = None
            if not self.transport.is_closing():
                self.transport.close()  # the app, if reading the body, sees a disconnect

    return DeadlineProtocol


def uvicorn_config(app, host: str, port: int, limits: ServeLimits, log_level: str = "warning"):
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                          http=_deadline_protocol(limits.read_timeout), timeout_keep_alive=5)


class ServerHandle:
    """A uvicorn server running on a background thread (for tests and the demo)."""

    def __init__(self, server, thread: threading.Thread, url: str):
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> ServerHandle:
    """Start `app` on host:port (0 = a free port) in a daemon thread; returns once it accepts connections."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, host, port, app.state.engine.limits))
    thread = threading.Thread(target=server.run, daemon=True, name="tunelens-uvicorn")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return ServerHandle(server, thread, f"http://{host}:{bound}")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (a name other than localhost counts as not)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to open the model to a network without a key, unless the user says so explicitly."""
    if api_key is None and not is_loopback(host) and not insecure:
        raise UserError(f"--host {host} is reachable from other machines: pass --api-key (or set {API_KEY_ENV}), "
                        "or --insecure to serve without one")
    if api_key is not None and not api_key.strip():
        raise UserError("the API key is empty")


def serve(model_spec: str, adapter: str | Path | None = None, gate_dir: str | Path | None = None,
          host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          limits: ServeLimits = ServeLimits(), api_key: str | None = None, insecure: bool = False,
          log: Callable[[str], None] = print, upstream=None, max_batch: int = 16, few_shot: int = 0,
          few_shot_index: str | Path | None = None) -> None:
    """`tunelens serve`: load the model (and adapter, gate), or point at an upstream engine; serve until
    interrupted. Chat requests are shown `few_shot` (or their own `few_shot`) nearest training pairs from
    the gate directory `few_shot_index` (default: `gate_dir`)."""
    import uvicorn

    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    check_exposure(host, api_key, insecure)
    gate = Gate.load(gate_dir) if gate_dir is not None else None
    examples = _few_shot_serving(few_shot, few_shot_index, gate_dir, gate)
    if upstream is not None:
        app = _upstream_app(upstream, adapter, gate, limits, api_key, log, examples)
    else:
        app = _local_app(model_spec, adapter, gate, device, limits, api_key, log, max_batch, examples)
    for loaded in {id(g): g for g in (gate, examples.gate) if g is not None}.values():
        loaded.embedder  # load the embedder now, not on the first request
    log(f"serving {', '.join(app.state.engine.model_names())} on http://{host}:{port}/v1"
        + (" (API key required)" if api_key else ""))
    uvicorn.Server(uvicorn_config(app, host, port, limits, log_level="info")).run()


def _few_shot_serving(k: int, index, gate_dir, gate):
    """The few-shot examples' source: its own gate directory, or the routing gate's (loaded once)."""
    index = index if index is not None else gate_dir
    same = gate_dir is not None and Path(index).resolve() == Path(gate_dir).resolve()
    return FewShotServing(k, gate if same else Gate.load(index) if index is not None else None)


def _local_app(model_spec: str, adapter, gate, device: str, limits: ServeLimits, api_key: str | None, log,
               max_batch: int, few_shot=None):
    if gate is not None and adapter is None:
        raise UserError("--gate routes between the adapter and the base model: pass --adapter too")
    log(f"loading {model_spec}" + (f" with adapter {adapter}" if adapter else ""))
    loaded = LoadedModel.load(model_spec, adapter=adapter, device=device)
    return create_app(loaded, gate=gate, limits=limits, api_key=api_key, max_batch=max_batch, few_shot=few_shot)


def _upstream_app(upstream, adapter, gate, limits: ServeLimits, api_key: str | None, log, few_shot=None):
    """No model here: check the options and the upstream's model names, then forward."""
    if adapter is not None:
        raise UserError("--adapter loads an adapter here; with --upstream the engine serves it: name it with "
                        "--upstream-adapter-model")
    if gate is not None and upstream.adapter_model is None:
        raise UserError("--gate routes between the adapter and the base model: pass --upstream-adapter-model too")
    check_gate_for_upstream(gate)  # before anything slow
    if warning := check_upstream_models(upstream):
        log(f"warning: {warning}")
    log(f"forwarding to {upstream.url}: base {upstream.base_model}"
        + (f", adapter {upstream.adapter_model}" if upstream.adapter_model else ""))
    return create_app(gate=gate, limits=limits, api_key=api_key, upstream=upstream, few_shot=few_shot)
