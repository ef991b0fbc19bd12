"""
C{twistd -n graceful --wsgi myapp.app} (or C{--app myapp.root}), run from the
directory holding C{myapp.py}, serves it; so does the successor of a restart,
with the new code of the module.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import pytest_twisted
import treq

from ._client import freshPool, portOf
from ._procs import killAll, waitUntilGone
from ._server import startServer, stopServer

WSGI = '''
import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("{version} from pid %d" % os.getpid()).encode()]
'''

RESOURCE = '''
import os

from twisted.web.resource import Resource


class Root(Resource):
    isLeaf = True

    def render_GET(self, request):
        return ("{version} from pid %d" % os.getpid()).encode()


def root():
    return Root()
'''


@pytest.mark.parametrize("option, dotted, source", [("--wsgi", "myapp.app", WSGI), ("--app", "myapp.root", RESOURCE)])
@pytest_twisted.ensureDeferred
async def test_moduleBesideTheCommand(tmp_path: Path, option: str, dotted: str, source: str) -> None:
    module = tmp_path / "myapp.py"
    module.write_text(source.replace("{version}", "first"))
    server = startServer(tmp_path, "--port", "tcp:0:interface=127.0.0.1", option, dotted)
    pids = []
    try:
        ready = await server.waitForPhase("ready")
        pids.append(ready["pid"])
        url = f"http://127.0.0.1:{portOf(ready)}/"
        response = await treq.get(url, pool=freshPool(), timeout=10)
        assert await response.text() == f"first from pid {ready['pid']}"
        # A new release of the module: the successor imports it from the
        # same directory.
        module.write_text(source.replace("{version}", "second release"))
        server.signal(signal.SIGUSR2)
        successor = await server.waitFor(
            "the successor's ready", lambda e: e.get("phase") == "ready" and e.get("pid") != ready["pid"]
        )
        pids.append(successor["pid"])
        await waitUntilGone(ready["pid"])
        response = await treq.get(url, pool=freshPool(), timeout=10)
        assert await response.text() == f"second release from pid {successor['pid']}"
    finally:
        stopServer(server)
        killAll(pids)
