"""
The baseline: a plain twisted.web Site serving bench/app.py, with the same
access-log setting as `twistd graceful --no-access-log`.

    python bench/plain_site.py PORT
"""

import sys

from twisted.internet import reactor
from twisted.web.server import Site

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from app import root  # noqa: E402

site = Site(root())
site.log = lambda request: None
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
print("ready", flush=True)
reactor.run()
