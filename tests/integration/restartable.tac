# A .tac whose behaviour the restart tests change between generations, by
# editing files in the working directory: `mode` (how this generation starts)
# and `ports` (one endpoint description per line).
import os
import signal
import time

from twisted.application import service
from twisted.logger import Logger

from twisted_graceful import GracefulService
from tests.integration.app import App

log = Logger(namespace="restartable")
mode = open("mode").read().strip() if os.path.exists("mode") else "ok"
ports = [line.strip() for line in open("ports")] if os.path.exists("ports") else ["tcp:0:interface=127.0.0.1"]

if mode == "import-error":
    import module_that_does_not_exist  # noqa: F401


class Fault(service.Service):
    def startService(self):
        super().startService()
        log.info("fault service starting in mode {mode}", mode=mode, testEvent="fault-start")
        if mode == "start-error":
            raise RuntimeError("this release fails in startService")
        if mode == "exit-after-adopt":
            os._exit(3)
        if mode == "hang":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(3600)
        if mode == "slow-start":
            time.sleep(float(os.environ.get("SLOW_START", "2")))
        if mode == "crash-after-ready":
            from twisted.internet import reactor

            reactor.callWhenRunning(reactor.callLater, float(os.environ.get("CRASH_AFTER", "1.5")), crash)


def crash():
    # Accept no more, finish the responses in flight, then die: what is
    # tested is that nothing queued or new is refused, not that a process
    # that dies mid-response loses that response (it does).
    from twisted.internet import reactor

    for endpoint in web.endpoints():
        endpoint.port.stopReading()
    deadline = time.monotonic() + 5

    def whenIdle():
        if any(e.factory.connectionCount() for e in web.endpoints()) and time.monotonic() < deadline:
            reactor.callLater(0.01, whenIdle)
            return
        log.info("crashing after ready", testEvent="crash")
        os._exit(1)

    whenIdle()


application = service.Application("restartable")
web = GracefulService(
    readyTimeout=float(os.environ.get("READY_TIMEOUT", "20")),
    # Tests not about the probation keep it short, so restarts stay quick.
    probation=float(os.environ.get("PROBATION", "0.2")),
    pidFile="app.pid",
)
for port in ports:
    web.addEndpoint(port, App(), shutdownTimeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "10")))
web.setServiceParent(application)
Fault().setServiceParent(application)
