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


application = service.Application("restartable")
web = GracefulService(readyTimeout=float(os.environ.get("READY_TIMEOUT", "20")), pidFile="app.pid")
for port in ports:
    web.addEndpoint(port, App(), shutdownTimeout=float(os.environ.get("SHUTDOWN_TIMEOUT", "10")))
web.setServiceParent(application)
Fault().setServiceParent(application)
