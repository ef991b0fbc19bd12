# -*- test-case-name: tests.test_demo -*-
"""
The demo application served by C{twistd graceful} when neither C{--app} nor
C{--wsgi} is given.

C{/} is a page (plain text for clients that do not ask for HTML, such as
curl) showing the serving pid, its generation, when it started and whether
it serves or drains; in a browser it follows C{/events}, a server-sent
event stream that ends when the drain begins, so the page reconnects to the
successor and shows the new generation live.  C{/slow?seconds=2} answers
after that many seconds, so a drain or a restart can be watched with a
request in flight; C{/pid} answers the pid alone.  Any other path is 404.
"""

from __future__ import annotations

import html
import json
import os
import time
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ._drain import isDraining, whenDraining

MAX_SLOW_SECONDS = 300.0

#: Seconds between two status events of C{/events}.
EVENT_INTERVAL = 1.0

#: Milliseconds a browser waits before it reconnects the event stream.
RECONNECT_MS = 300


class DemoResource(Resource):
    """
    The demo application.

    @param clock: Schedules slow responses and status events; the global
        reactor by default.
    @ivar service: The L{GracefulService} serving the demo, for the
        generation and whether it stops; L{None} shows generation 1.
    """

    isLeaf = True

    def __init__(self, clock: Any = None, service: Any = None) -> None:
        super().__init__()
        self._clock = clock
        self.service = service
        self.started = time.time()

    def _reactor(self) -> Any:
        if self._clock is None:
            from twisted.internet import reactor

            return reactor
        return self._clock

    def status(self, request: Request) -> dict[str, Any]:
        """
        What the page shows: C{pid}, C{generation}, C{started} (ISO 8601,
        UTC) and C{state} (C{serving} or C{draining}).
        """
        stopping = self.service is not None and self.service.stopping
        return {
            "pid": os.getpid(),
            "generation": self.service.generation if self.service is not None else 1,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "state": "draining" if stopping or isDraining(request) else "serving",
        }

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"X-Pid", str(os.getpid()).encode())
        if request.path == b"/":
            return self._index(request)
        if request.path == b"/events":
            return self._events(request)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if request.path == b"/pid":
            return str(os.getpid()).encode()
        if request.path == b"/slow":
            return self._slow(request)
        request.setResponseCode(404)
        return b"Not found. The demo serves /, /events, /slow?seconds=2 and /pid.\n"

    def _index(self, request: Request) -> bytes:
        status = self.status(request)
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        if "text/html" not in accept:
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return (
                f"twisted-graceful demo\n"
                f"pid: {status['pid']}\n"
                f"generation: {status['generation']}\n"
                f"started: {status['started']}\n"
                f"state: {status['state']}\n"
                f"try /slow?seconds=2 and send SIGTERM or SIGUSR2 while it runs\n"
            ).encode()
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        host = (request.getHeader(b"host") or b"127.0.0.1:8080").decode("latin-1")
        page = _PAGE
        for name, value in [*status.items(), ("host", host)]:
            page = page.replace("{" + name + "}", html.escape(str(value)))
        return page.encode()

    def _events(self, request: Request) -> int:
        """
        A status event now and every L{EVENT_INTERVAL} seconds; when the
        endpoint starts to drain, a last one (C{draining}) and the end of the
        stream, so the browser reconnects, to the successor during a restart.
        """
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-store")
        request.write(f"retry: {RECONNECT_MS}\n\n".encode())
        clock = self._reactor()
        pending: list[IDelayedCall] = []

        def send() -> None:
            pending.clear()
            request.write(f"event: status\ndata: {json.dumps(self.status(request))}\n\n".encode())
            pending.append(clock.callLater(EVENT_INTERVAL, send))

        def drain(_: object) -> None:
            for call in pending:
                call.cancel()
            pending.clear()
            status = dict(self.status(request), state="draining")
            request.write(f"event: status\ndata: {json.dumps(status)}\n\n".encode())
            request.finish()

        def gone(_: object) -> None:
            for call in pending:
                call.cancel()
            pending.clear()
            draining.cancel()

        draining = whenDraining(request)
        draining.addCallback(drain)
        draining.addErrback(_ignoreCancelled)
        request.notifyFinish().addErrback(gone)
        if not draining.called:
            send()
        return NOT_DONE_YET

    def _slow(self, request: Request) -> bytes | int:
        raw = request.args.get(b"seconds", [b"2"])[0]
        try:
            seconds = float(raw)
        except ValueError:
            request.setResponseCode(400)
            return b"seconds must be a number, such as /slow?seconds=2\n"
        if not 0 <= seconds <= MAX_SLOW_SECONDS:
            request.setResponseCode(400)
            return f"seconds must be between 0 and {MAX_SLOW_SECONDS:g}\n".encode()

        def answer() -> None:
            request.write(f"slow response from pid {os.getpid()} after {seconds:g} s\n".encode())
            request.finish()

        call: IDelayedCall = self._reactor().callLater(seconds, answer)
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)
        return NOT_DONE_YET


def _ignoreCancelled(failure: Failure) -> None:
    failure.trap(CancelledError)


resource = DemoResource
"""
The name C{--app twisted_graceful.demo.resource} loads: a zero-argument
callable returning the demo resource.
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>twisted-graceful demo</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1d232a; }
  h1 { font-size: 1.5rem; margin-bottom: .25rem; }
  .lead { color: #55606b; margin-top: 0; }
  dl { display: grid; grid-template-columns: 9rem 1fr; gap: .35rem 1rem; padding: 1rem 1.25rem;
       border-radius: .5rem; background: #eef6ee; border: 1px solid #b7dab9; }
  body[data-state="draining"] dl { background: #fff4e0; border-color: #f0c36d; }
  dt { color: #55606b; }
  dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
  #connection { font-weight: normal; color: #55606b; }
  code, pre { font: 14px/1.4 ui-monospace, monospace; }
  pre { background: #f4f5f7; padding: .75rem 1rem; border-radius: .5rem; overflow-x: auto; }
  #history:empty::before { content: "No restart yet."; color: #55606b; }
</style>
</head>
<body data-state="{state}">
<h1>twisted-graceful demo</h1>
<p class="lead">Graceful shutdown and zero-downtime restart for Twisted HTTP services.</p>
<dl>
  <dt>pid</dt><dd id="pid">{pid}</dd>
  <dt>generation</dt><dd id="generation">{generation}</dd>
  <dt>started</dt><dd id="started">{started}</dd>
  <dt>state</dt><dd><span id="state">{state}</span> <span id="connection"></span></dd>
</dl>
<h2>Try a restart</h2>
<p>Start a slow request, then restart the server while it runs; this page follows the new
generation without a reload, and the slow request is answered by the old pid.</p>
<pre>curl 'http://{host}/slow?seconds=5' &amp;
twisted-graceful reload --pidfile app.pid     # or: kill -USR2 <span class="pid">{pid}</span></pre>
<p>Stop it with <code>twisted-graceful stop --pidfile app.pid</code> (or <code>kill -TERM <span class="pid">{pid}</span></code>):
the slow request still completes.</p>
<h2>Restarts seen by this page</h2>
<ul id="history"></ul>
<script>
  const shown = ["pid", "generation", "started", "state"];
  let last = null;
  function show(status) {
    for (const name of shown) document.getElementById(name).textContent = status[name];
    for (const element of document.querySelectorAll(".pid")) element.textContent = status.pid;
    document.body.dataset.state = status.state;
    if (last !== null && last.pid !== status.pid) {
      const item = document.createElement("li");
      item.textContent = "generation " + last.generation + " (pid " + last.pid + ") \\u2192 generation "
        + status.generation + " (pid " + status.pid + ") at " + new Date().toLocaleTimeString();
      document.getElementById("history").append(item);
    }
    last = status;
  }
  const events = new EventSource("/events");
  events.addEventListener("status", (event) => show(JSON.parse(event.data)));
  events.onopen = () => { document.getElementById("connection").textContent = "(live)"; };
  events.onerror = () => { document.getElementById("connection").textContent = "(reconnecting\\u2026)"; };
</script>
</body>
</html>
"""
