# -*- test-case-name: tests.test_demo -*-
"""
The demo application served by C{twistd graceful} when neither C{--app} nor
C{--wsgi} is given.

C{/} shows the serving pid and when the process started; C{/slow?seconds=2}
answers after that many seconds, so a drain or a restart can be watched with
a request in flight; C{/pid} answers the pid alone.
"""

from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

MAX_SLOW_SECONDS = 300.0


class DemoResource(Resource):
    """
    The demo application.

    @param clock: Schedules slow responses; the global reactor by default.
    """

    isLeaf = True

    def __init__(self, clock: Any = None) -> None:
        super().__init__()
        self._clock = clock
        self.started = time.time()

    def _reactor(self) -> Any:
        if self._clock is None:
            from twisted.internet import reactor

            return reactor
        return self._clock

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"X-Pid", str(os.getpid()).encode())
        if request.path == b"/pid":
            return str(os.getpid()).encode()
        if request.path == b"/slow":
            return self._slow(request)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))
        return (
            f"twisted-graceful demo\n"
            f"pid: {os.getpid()}\n"
            f"started: {started}\n"
            f"try /slow?seconds=2 and send SIGTERM or SIGUSR2 while it runs\n"
        ).encode()

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


resource = DemoResource
"""
The name C{--app twisted_graceful.demo.resource} loads: a zero-argument
callable returning the demo resource.
"""
