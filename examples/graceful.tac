# Run with: twistd -n --pidfile= -y examples/graceful.tac
#
# Graceful HTTP endpoints added to an existing Twisted application, beside a
# service of its own. On SIGTERM: both endpoints stop accepting, drain, the
# shutdown hook runs, then the other service stops.
import os

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.logger import Logger
from twisted.web.resource import Resource

from twisted_graceful import GracefulService

log = Logger(namespace="example")


class Text(Resource):
    isLeaf = True

    def __init__(self, text: bytes) -> None:
        super().__init__()
        self.text = text

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        return self.text


application = service.Application("example")

web = GracefulService()
web.addEndpoint(
    os.environ.get("EXAMPLE_PORT", "tcp:8080:interface=127.0.0.1"),
    Text(b"hello from a .tac\n"),
    shutdownTimeout=10,
)
web.addEndpoint(
    os.environ.get("EXAMPLE_ADMIN_PORT", "tcp:8081:interface=127.0.0.1"),
    Text(b"admin\n"),
    shutdownTimeout=2,
)
web.addShutdownHook(lambda: log.info("flushing the cache", testHook="flush"), timeout=5)
web.setServiceParent(application)

TimerService(60, lambda: None).setServiceParent(application)
