"""
The demo page in a real headless browser (Chromium): it shows the serving
process, and follows a restart live, with no reload, to the new generation.

Set C{TWISTED_GRACEFUL_SCREENSHOT=PATH} to keep a screenshot of the page
after the restart (the one in the docs is made so).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from ._server import ROOT, TWISTD
from .test_foreground import Lines

CHROMIUM = next((p for p in map(shutil.which, ["chromium", "chromium-browser", "google-chrome"]) if p), None)
DEADLINE = 30.0

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")


class DevToolsError(Exception):
    """
    The browser answered a DevTools call with an error.
    """


class DevTools:
    """
    Just enough of the Chrome DevTools Protocol, over a WebSocket to one
    page: call a method, evaluate an expression.
    """

    def __init__(self, url: str) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=DEADLINE)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=parts.netloc, target=parts.path)))
        self.pending: list[Any] = []
        self.next = 0
        self._until(lambda event: type(event).__name__ == "AcceptConnection")

    def _until(self, predicate: Any) -> Any:
        from wsproto.events import Ping

        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                if predicate(event):
                    return event
            data = self.sock.recv(1 << 20)
            assert data, "the browser closed the DevTools connection"
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())

    def call(self, method: str, **params: Any) -> Any:
        from wsproto.events import Message, TextMessage

        self.next += 1
        ident, text = self.next, ""
        self.sock.sendall(self.ws.send(TextMessage(json.dumps({"id": ident, "method": method, "params": params}))))
        while True:
            event = self._until(lambda e: isinstance(e, Message))
            text += event.data
            if not event.message_finished:
                continue
            message, text = json.loads(text), ""
            if message.get("id") == ident:
                if "error" in message:
                    raise DevToolsError(message["error"].get("message", message))
                return message["result"]

    def waitFor(self, condition: str, value: str) -> Any:
        """
        Evaluate C{value} in the page once the expression C{condition} holds,
        waiting in the page (on its own events) up to the deadline.
        """
        script = f"""new Promise((resolve, reject) => {{
            const end = Date.now() + {DEADLINE * 1000};
            const holds = () => {{ try {{ return {condition}; }} catch (e) {{ return false; }} }};
            const check = () => {{
                if (holds()) resolve({value});
                else if (Date.now() > end) reject(new Error("not within the deadline: " + document.documentElement.innerText));
                else setTimeout(check, 20);
            }};
            check();
        }})"""
        end = time.monotonic() + DEADLINE
        while True:
            try:
                result = self.call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)
                break
            except DevToolsError as e:
                # The page navigated (from about:blank to the demo) during
                # the evaluation: evaluate again in the new page.
                if "context was destroyed" not in str(e) or time.monotonic() > end:
                    raise
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"]["value"]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes] | int]]:
    """
    Processes started by the test (and pids of the server's successors),
    ended at teardown.
    """
    processes: list[subprocess.Popen[bytes] | int] = []
    yield processes
    for process in reversed(processes):
        if isinstance(process, int):
            try:
                os.kill(process, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def pageTarget(profile: Path, deadline: float) -> str:
    """
    The DevTools WebSocket of the browser's page, once the browser wrote
    its port (C{DevToolsActivePort}).
    """
    portFile = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if portFile.exists() and portFile.read_text().count("\n") >= 1:
            port = int(portFile.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=DEADLINE) as response:
                pages = [t for t in json.load(response) if t["type"] == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        time.sleep(0.05)
    raise AssertionError(f"Chromium did not open DevTools within {DEADLINE} s")


def test_demoFollowsRestart(tmp_path: Path, started: list[subprocess.Popen[bytes] | int]) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=app.pid", "--logger=twisted_graceful.jsonlog.observer",
         "graceful", "--probation", "0.2", "--port", "tcp:0:interface=127.0.0.1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    started.append(server)
    assert server.stdout is not None
    events = Lines(server.stdout)
    ready = events.waitFor("the server's ready", lambda e: e.get("phase") == "ready")
    address = next(iter(ready["endpoints"].values()))

    profile = tmp_path / "profile"
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=900,860", f"http://{address}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    started.append(browser)
    page = DevTools(pageTarget(profile, time.monotonic() + DEADLINE))
    try:
        first = page.waitFor(
            "document.getElementById('connection').textContent === '(live)'",
            "[document.getElementById('pid').textContent, document.getElementById('generation').textContent,"
            " document.getElementById('state').textContent]",
        )
        assert first == [str(ready["pid"]), "1", "serving"]

        os.kill(ready["pid"], signal.SIGUSR2)
        successor = events.waitFor(
            "the successor's ready", lambda e: e.get("phase") == "ready" and e.get("pid") != ready["pid"]
        )
        started.append(successor["pid"])
        second = page.waitFor(
            "document.getElementById('generation').textContent === '2'"
            " && document.getElementById('connection').textContent === '(live)'",
            "[document.getElementById('pid').textContent, document.getElementById('state').textContent,"
            " document.getElementById('history').innerText]",
        )
        assert second[:2] == [str(successor["pid"]), "serving"]
        assert f"generation 1 (pid {ready['pid']}) \u2192 generation 2 (pid {successor['pid']})" in second[2]

        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        assert shot.startswith(b"\x89PNG")
        keep = os.environ.get("TWISTED_GRACEFUL_SCREENSHOT")
        if keep:
            Path(keep).write_bytes(shot)
    finally:
        page.close()
    os.kill(successor["pid"], signal.SIGTERM)
    events.waitFor("the successor's stop", lambda e: e.get("phase") == "stopped" and e.get("pid") == successor["pid"])
