# -*- test-case-name: tests.test_health -*-
"""
A readiness endpoint for load balancers and Kubernetes: 200 while the
process serves, 503 from the moment it starts to stop (during
C{--drain-delay}, while everything else is still served normally).
"""

from __future__ import annotations

from typing import Callable

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site


class HealthResource(Resource):
    """
    Answers C{200 serving} or C{503 draining}.

    @param stopping: Tells whether the process has started to stop.
    """

    isLeaf = True

    def __init__(self, stopping: Callable[[], bool]) -> None:
        super().__init__()
        self._stopping = stopping

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        if self._stopping():
            request.setResponseCode(503)
            return b"draining\n"
        return b"serving\n"

    render_HEAD = render_GET


class HealthSite(Site):
    """
    A L{Site} that answers the health path itself, before its resource tree.

    @param healthPath: The path, such as C{b"/healthz"}.
    @param health: What answers it.
    """

    def __init__(self, resource: IResource, healthPath: bytes, health: IResource, **kwargs: object) -> None:
        super().__init__(resource, **kwargs)
        self.healthPath = healthPath
        self.health = health

    def getResourceFor(self, request: Request) -> IResource:
        if request.path == self.healthPath:
            request.site = self
            request.sitepath = list(request.prepath or [])  # type: ignore[attr-defined]
            return self.health
        return super().getResourceFor(request)  # type: ignore[no-any-return]
