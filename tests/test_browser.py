"""End to end: headless Chromium loads the echo page from `--proto auto`, the
page opens a WebSocket back to the same port, sends a message and shows the
echo. The test drives the page over the Chrome DevTools Protocol (a few
commands over the `websockets` client) and reads the text from the DOM.

Why CDP rather than `--dump-dom`: the echo arrives after the load event, and
`--dump-dom` snapshots at load time, so it would race the WebSocket; CDP lets
the test wait for the text itself, bounded by a deadline.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEADLINE = 30.0  # seconds for the whole browser session (start, load, echo)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # we run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # any free port, written to DevToolsActivePort
    "about:blank",
]


class Browser:
    """A headless Chromium in its own process group, and its DevTools port."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc = subprocess.Popen(
            [CHROMIUM, f"--user-data-dir={profile}", *CHROMIUM_FLAGS],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # so we can end exactly what we started
        )

    def devtools_port(self, deadline: float) -> int:
        active = self.profile / "DevToolsActivePort"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"chromium exited with {self.proc.returncode}"
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(active.read_text().split()[0])
            time.sleep(0.05)
        raise AssertionError("chromium did not open its DevTools port")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)  # the group we created, nothing else
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


class Page:
    """A minimal CDP client for one page target (flattened session)."""

    def __init__(self, browser_ws, session: str) -> None:
        self.ws = browser_ws
        self.session = session
        self.ids = itertools.count(1)

    def call(self, method: str, deadline: float, **params) -> dict:
        return cdp_call(self.ws, method, deadline, session=self.session, ids=self.ids, **params)

    def evaluate(self, expression: str, deadline: float):
        reply = self.call("Runtime.evaluate", deadline, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")

    def wait_for(self, expression: str, deadline: float, what: str):
        while time.monotonic() < deadline:
            value = self.evaluate(expression, deadline)
            if value:
                return value
            time.sleep(0.05)
        state = self.evaluate("document.body ? document.body.innerText : ''", deadline + 5)
        raise AssertionError(f"timed out waiting for {what}; page text:\n{state}")


def cdp_call(ws, method, deadline, *, session=None, ids, **params) -> dict:
    """Send one command and return its result; events in between are skipped."""
    message_id = next(ids)
    message = {"id": message_id, "method": method, "params": params}
    if session is not None:
        message["sessionId"] = session
    ws.send(json.dumps(message))
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no reply to {method}"
        reply = json.loads(ws.recv(timeout=left))
        if reply.get("id") == message_id:
            assert "error" not in reply, reply
            return reply["result"]


def auto_is_built() -> bool:
    return importlib.util.find_spec("reactor.handlers.auto") is not None


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not auto_is_built(), reason="--proto auto (reactor/handlers/auto.py) not built")
def test_chromium_loads_the_page_and_echoes_over_websocket(server_factory, tmp_path):
    server = server_factory("--proto", "auto")  # default --root: the project's html/
    text = f"hello from chromium {os.urandom(4).hex()}"
    browser = Browser(tmp_path / "profile")
    try:
        shown = drive_echo_page(browser, f"http://127.0.0.1:{server.port}/", text)
    finally:
        browser.stop()
    assert shown == f"echo: {text}"
    server.wait_for_log(r'"GET / HTTP/1\.1" 200')  # the page came over plain HTTP
    server.wait_for_log(r'"GET / HTTP/1\.1" 101')  # ... and the socket upgraded on the same port


@contextlib.contextmanager
def open_page(browser: Browser, url: str, deadline: float):
    """A new tab navigated to ``url``, driven over the DevTools protocol."""
    port = browser.devtools_port(deadline)
    version = json.loads(_http_get(f"http://127.0.0.1:{port}/json/version", deadline))
    ids = itertools.count(1)
    with connect(version["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
        target = cdp_call(ws, "Target.createTarget", deadline, ids=ids, url="about:blank")
        attached = cdp_call(
            ws,
            "Target.attachToTarget",
            deadline,
            ids=ids,
            targetId=target["targetId"],
            flatten=True,
        )
        page = Page(ws, attached["sessionId"])
        page.ids = ids
        page.call("Page.navigate", deadline, url=url)
        yield page


def drive_echo_page(browser: Browser, url: str, text: str) -> str:
    """Open the page, wait for the socket, submit `text`, return the echo line."""
    deadline = time.monotonic() + DEADLINE
    with open_page(browser, url, deadline) as page:
        page.wait_for(
            "document.getElementById('status')?.textContent.startsWith('open')",
            deadline,
            "the WebSocket to open",
        )
        page.evaluate(
            f"document.getElementById('message').value = {json.dumps(text)};"
            "document.getElementById('send').click(); true",
            deadline,
        )
        return page.wait_for(
            "[...document.querySelectorAll('#log li.echo')].map(li => li.textContent)[0]",
            deadline,
            "the echo",
        )


def _http_get(url: str, deadline: float) -> str:
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# Messages the page sends: JSON-like text that compresses, repeated so the
# client's kept context matters, plus a short one that stays plain.
BROWSER_ECHO_SCRIPT = """
new Promise((resolve) => {
  const ws = new WebSocket(`ws://${location.host}/`);
  const sent = [];
  for (let i = 0; i < 5; i++) {
    sent.push(JSON.stringify({seq: i, user: "ada", text: "hello ".repeat(200 + i)}));
  }
  sent.push("short");
  const got = [];
  ws.onopen = () => sent.forEach((m) => ws.send(m));
  ws.onmessage = (event) => {
    got.push(event.data);
    if (got.length === sent.length) {
      resolve({extensions: ws.extensions, same: got.every((m, i) => m === sent[i])});
      ws.close();
    }
  };
  ws.onerror = () => resolve({error: true});
})
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.skipif(not auto_is_built(), reason="--proto auto (reactor/handlers/auto.py) not built")
@pytest.mark.parametrize("mode", ["shared", "full"])
def test_chromium_echoes_with_permessage_deflate(server_factory, tmp_path, mode):
    server = server_factory("--proto", "auto", "--compression", mode)
    browser = Browser(tmp_path / "profile")
    try:
        result = run_in_page(browser, f"http://127.0.0.1:{server.port}/", BROWSER_ECHO_SCRIPT)
    finally:
        browser.stop()
    # Chromium offers "permessage-deflate; client_max_window_bits"
    expected = {
        "shared": "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
        "full": "permessage-deflate; client_max_window_bits=15",
    }[mode]
    assert result == {"extensions": expected, "same": True}


def run_in_page(browser: Browser, url: str, script: str):
    """Load ``url`` in a new page and return the value ``script`` (a promise) resolves to."""
    deadline = time.monotonic() + DEADLINE
    with open_page(browser, url, deadline) as page:
        page.wait_for("document.readyState === 'complete'", deadline, "the page to load")
        reply = page.call(
            "Runtime.evaluate",
            deadline,
            expression=script,
            awaitPromise=True,
            returnByValue=True,
        )
        assert "exceptionDetails" not in reply, reply
        return reply["result"].get("value")
