"""The trace and compare pages in headless Chromium: hover and focus a token, read the table the page shows.

Chromium is driven over the DevTools protocol with a small standard-library WebSocket client, so the
hover is a real mouse move (Input.dispatchMouseEvent) and the focus a real Tab key press.
"""

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (make browser)")


class DevTools:
    """Just enough of RFC 6455 and the DevTools protocol: masked text frames out, (fragmented) frames in."""

    def __init__(self, ws_url: str, timeout: float = 20.0):
        url = urlparse(ws_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(4096)
        head, self.buffer = response.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id, self.events = 0, []

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _message(self) -> dict:
        payload = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            payload += self._read(length)
            if first & 0x80:  # FIN: the last fragment
                return json.loads(payload)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        body = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(body) < 126:
            header += bytes([0x80 | len(body)])
        elif len(body) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(body))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(body))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
        while True:
            message = self._message()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium with its DevTools endpoint; yields a connected page."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1400,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.time() + 30
        while time.time() < deadline and port is None:
            line = process.stderr.readline()
            match = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                port = int(match.group(1))
            elif not line and process.poll() is not None:
                break
        assert port, "chromium did not report its DevTools port"
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t["type"] == "page")
        devtools = DevTools(page["webSocketDebuggerUrl"])
        devtools.call("Network.enable")
        yield devtools
        devtools.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def _open(browser: DevTools, path: Path) -> None:
    browser.events.clear()
    browser.call("Page.navigate", url=path.resolve().as_uri())
    deadline = time.time() + 20
    while browser.evaluate("document.readyState") != "complete":
        assert time.time() < deadline, "page did not load"
        time.sleep(0.05)
    requested = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert all(url.startswith(("file:", "data:")) for url in requested), requested


def _hover(browser: DevTools, selector: str) -> None:
    box = browser.evaluate(f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect();"
                           " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
    browser.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])


def _press_tab(browser: DevTools) -> None:
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)


TOPK_ROWS = ("[...document.querySelectorAll('#topk tbody tr')].map(r => ({id: Number(r.dataset.tokenId), "
             "prob: Number(r.dataset.prob), shown: r.querySelector('.prob').textContent, "
             "chosen: r.classList.contains('chosen')}))")


@pytest.fixture(scope="module")
def trace_page(tmp_path_factory):
    from tunelens.testing import tiny_model
    from tunelens.inspect.trace import TraceConfig, trace_generate, write_trace_html

    model, tokenizer = tiny_model("gemma3")
    trace = trace_generate(model, tokenizer, "Write a function that reverses a string.",
                           TraceConfig(max_new_tokens=6, top_k=5, temperature=3.0, seed=1))
    path = write_trace_html(trace, tmp_path_factory.mktemp("html") / "trace.html")
    return trace, path


def _expect_step(rows, step):
    expected = [(a.token_id, a.prob) for a in step.top]
    if step.rank > len(step.top):
        expected.append((step.token_id, step.prob))
    assert [(r["id"], r["prob"]) for r in rows] == expected
    assert [r["shown"] for r in rows] == [f"{100 * p:.2f}%" for _, p in expected]
    assert [r["id"] for r in rows if r["chosen"]] == [step.token_id]


def test_hovering_a_token_shows_its_top_k(browser, trace_page):
    trace, path = trace_page
    _open(browser, path)
    for index in (3, 1, 5):
        _hover(browser, f'.tok[data-step="{index}"]')
        assert browser.evaluate("document.getElementById('step-info').dataset.step") == str(index)
        _expect_step(browser.evaluate(TOPK_ROWS), trace.steps[index])


def test_focusing_a_token_with_tab_shows_its_top_k(browser, trace_page):
    trace, path = trace_page
    _open(browser, path)
    _press_tab(browser)
    _press_tab(browser)
    assert browser.evaluate("document.activeElement.dataset.step") == "1"
    _expect_step(browser.evaluate(TOPK_ROWS), trace.steps[1])


def test_compare_page_shows_every_condition_at_the_hovered_position(browser, tmp_path):
    from tunelens.inspect.compare import CompareConfig, compare_conditions, write_compare_html
    from tunelens.testing import tiny_model

    model, tokenizer = tiny_model("gemma3")
    comparison = compare_conditions(model, tokenizer, "Print hello.", ["Print hello in Python 3."],
                                    continuation="print('hello')", config=CompareConfig(top_k=3))
    path = write_compare_html(comparison, tmp_path / "compare.html")
    _open(browser, path)
    _hover(browser, '.tok[data-pos="2"]')
    rows = browser.evaluate("[...document.querySelectorAll('#probs tbody tr[data-token-id]')].map(r => "
                            "({id: Number(r.dataset.tokenId), probs: [...r.querySelectorAll('.prob')].map("
                            "c => Number(c.dataset.prob))}))")
    position = comparison.positions[2]
    assert [r["id"] for r in rows] == position.candidate_ids
    assert [r["probs"] for r in rows] == [[position.probs[c][j] for c in range(2)]
                                          for j in range(len(position.candidate_ids))]
    header = browser.evaluate("[...document.querySelectorAll('#probs thead th')].map(c => c.textContent)")
    assert header == ["token", "model · prompt", "model · variant 1"]
