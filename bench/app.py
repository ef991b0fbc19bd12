"""
The resource both servers serve in the benchmarks: a small fixed body.
"""

from twisted.web.resource import Resource


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"Content-Type", b"text/plain")
        return b"hello\n"


root = Hello


class Slow(Resource):
    """
    C{/slow?seconds=N} answers after N seconds; anything else answers at once.
    """

    isLeaf = True

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        from twisted.internet import reactor
        from twisted.web.server import NOT_DONE_YET

        if request.path == b"/pid":
            import os

            return str(os.getpid()).encode()
        if request.path != b"/slow":
            return b"hello\n"
        seconds = float(request.args.get(b"seconds", [b"1"])[0])

        def answer():  # type: ignore[no-untyped-def]
            request.write(b"slow\n")
            request.finish()

        call = reactor.callLater(seconds, answer)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return NOT_DONE_YET


slow = Slow
