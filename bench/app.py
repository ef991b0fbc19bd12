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
