"""
The application of the workers' integration tests: C{/} answers the
worker's pid.  A worker started while the file C{release} in the working
directory says C{broken} fails to load it, as a bad release would.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.resource import IResource

from .app import App


def root() -> IResource:
    release = Path("release")
    if release.exists() and release.read_text().strip() == "broken":
        raise RuntimeError("this release is broken")
    return App()
