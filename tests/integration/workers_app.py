"""
The application of the workers' integration tests: C{/} answers the
worker's pid.  A worker started while the file C{release} in the working
directory says C{broken} fails to load it, as a bad release would; one
started while it says C{dies-soon} exits 0.3 s after its reactor started
(after it reported ready).
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.resource import IResource

from .app import App


def root() -> IResource:
    release = Path("release")
    if release.exists() and release.read_text().strip() == "broken":
        raise RuntimeError("this release is broken")
    if release.exists() and release.read_text().strip() == "dies-soon":
        import os

        from twisted.internet import reactor

        # Once the reactor runs, which is when the worker reports ready.
        reactor.callWhenRunning(reactor.callLater, 0.3, os._exit, 3)  # type: ignore[attr-defined]
    return App()
