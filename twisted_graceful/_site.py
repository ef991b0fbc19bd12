# -*- test-case-name: tests.test_service -*-
"""
L{GracefulSiteService}: serves one HTTP endpoint and drains it when it
stops.  Its L{Listener} holds the socket; its L{DrainingFactory} tracks the
connections.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import IResource
from twisted.web.server import Site

from ._drain import DEFAULT_IDLE_GRACE, DrainingFactory, DrainResult
from ._endpoint import ListenAddress, parseEndpoint
from ._listener import Listener, maybeGlobalReactor

DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class GracefulSiteService(Service):
    """
    Serve a L{Site} (or an L{IResource}, in a new L{Site}) on one endpoint,
    and drain it when the service stops.

    The listening socket is bound by the library and adopted by the reactor
    in L{privilegedStartService} (or L{startService}, if that was not
    called), so that it can be handed to a successor process.

    @ivar address: The parsed endpoint.
    @ivar listener: The listening socket.
    @ivar shutdownTimeout: Seconds the drain may take before the remaining
        connections are aborted; L{None} waits for ever.
    """

    def __init__(
        self,
        description: str,
        site: Site | IResource,
        *,
        shutdownTimeout: float | None = DEFAULT_SHUTDOWN_TIMEOUT,
        idleGrace: float = DEFAULT_IDLE_GRACE,
        reactor: Any = None,
    ) -> None:
        """
        @param description: C{8080}, or a Twisted endpoint description:
            C{tcp:...}, C{tcp6:...}, C{unix:...} or C{ssl:...}.
        @param site: What to serve.
        @param idleGrace: Seconds a kept-alive connection must stay quiet
            during the drain before it is closed.
        @param reactor: The reactor; the global one by default.
        @raise BadEndpoint: C{description} cannot be served.
        @raise TypeError: C{site} is neither a L{Site} nor an L{IResource}.
        """
        self.address: ListenAddress = parseEndpoint(description)
        if shutdownTimeout is not None and shutdownTimeout < 0:
            raise ValueError(f"shutdownTimeout must be zero or more seconds, or None, not {shutdownTimeout!r}.")
        self._reactor = reactor
        if not isinstance(site, Site):
            if not IResource.providedBy(site):
                raise TypeError(
                    f"GracefulSiteService serves a twisted.web Site or IResource, but {site!r} is "
                    "neither. Wrap a WSGI application in twisted.web.wsgi.WSGIResource."
                )
            site = Site(site, reactor=reactor)
        self.site = site
        self.shutdownTimeout = shutdownTimeout
        self.factory = DrainingFactory(site, self._clock, name=self.address.description, idleGrace=idleGrace)
        self.listener = Listener(self.address, self.factory, reactor)
        self._portStopped: Deferred[Any] | None = None

    @property
    def _clock(self) -> Any:
        return maybeGlobalReactor(self._reactor)

    @property
    def identity(self) -> str:
        """
        The identity of this endpoint's listening socket.
        """
        return self.address.identity

    @property
    def port(self) -> IListeningPort | None:
        """
        The listening port once started, else L{None}.
        """
        return self.listener.port

    @property
    def inheritedFileno(self) -> int | None:
        """
        A listening socket to adopt instead of binding a new one, or
        L{None} (see L{Listener.inheritedFileno}).
        """
        return self.listener.inheritedFileno

    @inheritedFileno.setter
    def inheritedFileno(self, fileno: int | None) -> None:
        self.listener.inheritedFileno = fileno

    @property
    def fromSystemd(self) -> bool:
        """
        C{inheritedFileno} came from systemd (see L{Listener.fromSystemd}).
        """
        return self.listener.fromSystemd

    @fromSystemd.setter
    def fromSystemd(self, value: bool) -> None:
        self.listener.fromSystemd = value

    def listeningAddress(self) -> str | None:
        """
        Where this endpoint listens (C{127.0.0.1:8080}, a path), or L{None}
        before it listens.
        """
        return self.listener.listeningAddress()

    def fileno(self) -> int:
        """
        The listening socket's descriptor, to hand to a successor.
        """
        return self.listener.fileno()

    def bind(self) -> None:
        """
        Bind the listening socket now, unless it is inherited or bound
        already; it is adopted by the reactor when the service starts.  Call
        this to report an address in use before the process daemonizes.

        @raise ListenFailed: The socket cannot be bound.
        """
        self.listener.bind()

    def unbind(self) -> None:
        """
        Close a socket bound by L{bind} that is not listening yet.
        """
        self.listener.unbind()

    def privilegedStartService(self) -> None:
        """
        Bind (or adopt the inherited socket) and listen.

        @raise ListenFailed: The socket cannot be bound.
        """
        self.listener.listen()
        super().privilegedStartService()

    def startService(self) -> None:
        self.listener.listen()
        super().startService()

    def adoptConnection(self, family: int, fileno: int) -> str | None:
        """
        Serve the connection C{fileno}, moved here from the process that
        served it before (L{twisted_graceful._handoff}).

        @return: Why it was refused, or L{None} if it was taken.
        """
        if self.port is None:
            return "not served here"
        if self.address.tlsContextFactory is not None:
            return "TLS endpoint"
        if self.factory.draining:
            return "draining"
        if family != self.address.family:
            return "another address family"
        self._clock.adoptStreamConnection(fileno, family, self.factory)
        return None

    def whenDraining(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires when this endpoint starts to drain.
        """
        return self.factory.whenDraining()

    def stopAccepting(self, handOver: bool = False) -> None:
        """
        Stop accepting connections.  The socket is closed in this process but
        never shut down, so a successor that shares it keeps accepting.

        @param handOver: A successor serves this socket now: a UNIX socket's
            file is left in place (a final stop removes it), and connections
            the kernel queued are left to the successor.
        """
        if not handOver:
            self.listener.close()
            return
        stopped = self.listener.handOver()
        if stopped is not None:
            # The drain waits for the port to close, or a stop that drains
            # at once would end the reactor first.
            self._portStopped = stopped

    def drain(self, restarting: bool = False) -> Deferred[DrainResult]:
        """
        Stop accepting and drain, within L{shutdownTimeout}.

        @param restarting: The drain is part of a restart (WebSockets are
            closed with 1012 instead of 1001).
        @return: A L{Deferred} that fires with the L{DrainResult}.
        """
        self.stopAccepting()
        drained = self.factory.drain(self.shutdownTimeout, restarting)
        if self._portStopped is None:
            return drained
        portStopped, self._portStopped = self._portStopped, None
        return portStopped.addBoth(lambda _: drained)

    def cutShort(self) -> None:
        """
        Abort every connection now.
        """
        self.stopAccepting()
        self.factory.abortAll()

    def stopService(self) -> Deferred[DrainResult]:
        """
        Stop accepting and drain.

        @return: A L{Deferred} that fires with the L{DrainResult}.
        """
        super().stopService()
        return self.drain()


def adopterFor(endpoints: Callable[[], Iterable[GracefulSiteService]]) -> Callable[[str, int, int], str | None]:
    """
    Adopts a moved connection into the endpoint of its identity, among
    C{endpoints()}.
    """

    def adopt(identity: str, family: int, fileno: int) -> str | None:
        for endpoint in endpoints():
            if endpoint.identity == identity:
                return endpoint.adoptConnection(family, fileno)
        return "not served here"

    return adopt
