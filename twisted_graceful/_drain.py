# -*- test-case-name: tests.test_drain -*-
"""
Draining a L{twisted.web.server.Site}: track its connections, and once told
to drain, let requests in flight finish, answer requests that arrive on
kept-alive connections with C{Connection: close}, close connections that stay
idle, and abort whatever is left at a deadline.

The factory that counts and ends the drain is here; how each connection
drains is in L{twisted_graceful._channels} (HTTP/1.1 and upgraded
WebSockets) and L{twisted_graceful._h2drain} (HTTP/2).

These three modules are the only ones that touch private Twisted names.
Each use is marked C{PRIVATE} and pinned by a test (C{PrivateTwistedNamesTests}
in C{tests/test_drain.py} and C{tests/test_h2drain.py}) that fails loudly
when Twisted changes it.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.web import http
from twisted.web.server import Site
from zope.interface import implementer

from ._channels import _DrainingHTTPChannel, _TrackedChannelProtocol
from ._errors import UnsupportedSite
from ._once import Once

# PRIVATE: the protocol factory of Twisted's Site, which builds the protocol
# that switches between HTTP/1.1 and HTTP/2 after ALPN.
_defaultSiteProtocol: Any = http._genericHTTPChannelProtocolFactory

DEFAULT_IDLE_GRACE = 1.0
"""
Seconds a kept-alive connection must stay quiet during a drain before it is
closed.  A client sends its next request on a kept-alive connection soon
after the previous response, but "soon" stretches on a loaded machine:
closing the connection in that window resets the request.  0.1 s lost
requests when 20 restarts in a row saturated 2 cores; see C{docs/drain.md}.
"""



class Mover(Protocol):
    """
    Moves idle kept-alive connections to a successor process during a drain
    (L{twisted_graceful._movable.EndpointMover}).
    """

    def mayMove(self, channel: Any) -> bool: ...

    def offer(self, channel: Any, refused: Callable[[], None]) -> bool: ...

    def abandon(self, channel: Any) -> None: ...


GOING_AWAY_CLOSE = (1001, "server going away")
RESTART_CLOSE = (1012, "service restart")


@frozen
class DrainResult:
    """
    What one drain did.

    @ivar endpoint: The name of the drained endpoint.
    @ivar connections: Connections open when the drain began.
    @ivar inFlight: Requests in flight when the drain began.
    @ivar completed: Requests that completed during the drain.
    @ivar abortedConnections: Connections aborted at the deadline.
    @ivar abortedRequests: Requests cut by those aborts.
    @ivar elapsed: Seconds from the start of the drain to its end.
    @ivar moved: Idle kept-alive connections handed to the successor
        process, open there, instead of being closed.
    """

    endpoint: str
    connections: int
    inFlight: int
    completed: int
    abortedConnections: int
    abortedRequests: int
    elapsed: float
    moved: int = 0

    @property
    def clean(self) -> bool:
        """
        C{True} when nothing had to be aborted.
        """
        return self.abortedConnections == 0


@implementer(IProtocolFactory, IProtocolNegotiationFactory)
@define(eq=False)
class DrainingFactory:
    """
    Serve a L{Site} and drain it on demand.

    Listen with this factory instead of the site.  It builds the protocol of
    each connection as the site would, tracked; the site itself is not
    changed, so one site can be served by several factories.  It is started
    and stopped through this factory, and stays started until the drain ends
    so that its access log records the responses completed while draining.

    @ivar name: A name for the endpoint in log events.
    """

    _log = Logger()

    _site: Site
    _clock: IReactorTime
    name: str = ""
    _idleGrace: float = DEFAULT_IDLE_GRACE
    _connections: set[_TrackedChannelProtocol] = field(init=False, factory=set)
    _accepting: bool = field(init=False, default=True)
    _drainStarted: float | None = field(init=False, default=None)
    _completed: int = field(init=False, default=0)
    _drained: Once[DrainResult] = field(init=False, factory=Once)
    _drainBegan: Once[None] = field(init=False, factory=Once)
    _siteStopPending: bool = field(init=False, default=False)
    _atStart: tuple[int, int] = field(init=False, default=(0, 0))
    _abortedConnections: int = field(init=False, default=0)
    _abortedRequests: int = field(init=False, default=0)
    _deadline: IDelayedCall | None = field(init=False, default=None)
    _result: DrainResult | None = field(init=False, default=None)
    _closeCode: tuple[int, str] = field(init=False, default=(1001, "going away"))
    _timeout: float | None = field(init=False, default=None)
    _mover: Mover | None = field(init=False, default=None)
    _nextMover: Mover | None = field(init=False, default=None)
    _moved: int = field(init=False, default=0)
    _tlsUnanswered: int = field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if "protocol" in vars(self._site) or type(self._site).protocol is not _defaultSiteProtocol:
            raise UnsupportedSite(
                f"{self._site!r} has a custom 'protocol'; DrainingFactory needs "
                "Twisted's default HTTP channel to track connections. Remove the "
                "customisation, or override the site's requestFactory instead."
            )
        if type(self._site).buildProtocol is not Site.buildProtocol:
            raise UnsupportedSite(
                f"{self._site!r} has a custom 'buildProtocol'; DrainingFactory builds "
                "the protocol of each connection itself to track it. Remove the "
                "override, or override the site's requestFactory instead."
            )

    @property
    def site(self) -> Site:
        """
        The drained site.
        """
        return self._site

    @property
    def draining(self) -> bool:
        """
        C{True} once L{drain} has been called.
        """
        return self._drainStarted is not None

    # IProtocolFactory

    def logPrefix(self) -> str:
        return "twisted_graceful"

    def buildProtocol(self, addr: IAddress) -> Any:
        """
        Build the protocol the site would build, tracked by this factory.

        The site is left untouched, so that it can be served by several
        factories (one per endpoint), each tracking its own connections.
        """
        if not self._accepting:
            return None
        channel = _DrainingHTTPChannel()
        channel._tracker = self
        protocol = _TrackedChannelProtocol(channel)
        protocol._tracker = self
        # What Site.buildProtocol and HTTPFactory.buildProtocol set on the
        # protocol they build; the generic protocol hands each to the
        # channel it switches to after ALPN.  Pinned by
        # PrivateTwistedNamesTests.test_siteBuildProtocol.
        site = self._site
        protocol.factory = site
        protocol.callLater = site.reactor.callLater
        protocol.timeOut = site.timeOut
        protocol.requestFactory = site.requestFactory
        protocol.site = site
        return protocol

    def acceptableProtocols(self) -> list[bytes]:
        """
        The protocols to offer by ALPN on a TLS port: the site's (C{h2}
        when HTTP/2 is installed, and C{http/1.1}).  Without them, a TLS
        port whose options name none answers a client that offers ALPN with
        a handshake failure.
        """
        return list(self._site.acceptableProtocols())

    def doStart(self) -> None:
        self._site.doStart()

    def doStop(self) -> None:
        if self._connections:
            self._siteStopPending = True
        else:
            self._site.doStop()

    # Draining

    def connectionCount(self) -> int:
        """
        How many connections are open.
        """
        return len(self._connections)

    def inFlightCount(self) -> int:
        """
        How many requests are in flight over all open connections.
        """
        return sum(protocol.inFlight() for protocol in self._connections)

    def whenDraining(self) -> Deferred[None]:
        """
        @return: A L{Deferred} that fires with L{None} when the drain begins
            (at once if it has begun).  Cancelling it only forgets it.
        """
        return self._drainBegan.when()

    def stopAccepting(self) -> None:
        """
        Refuse any connection still handed to this factory.  Stop the
        listening port too: this only guards the race between the two.
        """
        self._accepting = False

    def drain(
        self, timeout: float | None, restarting: bool = False, mover: Mover | None = None
    ) -> Deferred[DrainResult]:
        """
        Let every connection finish its requests in flight, then close.
        Each open WebSocket is closed at once with status 1001 (going away),
        or 1012 (service restart) when C{restarting}.

        @param timeout: Seconds after which the remaining connections are
            aborted, or L{None} to wait for ever.
        @param restarting: The drain is part of a restart.
        @param mover: Moves idle kept-alive connections to the successor
            instead of closing them (at the start of the drain, after each
            response, and before an idle close); L{None} closes them all.
        @return: A L{Deferred} that fires with a L{DrainResult} when the last
            connection has closed.  Calling L{drain} again returns a new
            L{Deferred} for the same end.
        """
        self._accepting = False
        if self._drainStarted is None:
            self._closeCode = RESTART_CLOSE if restarting else GOING_AWAY_CLOSE
            self._mover = mover if mover is not None else self._nextMover
            self._startDrain(timeout)
        return self._drained.when()

    def moveOnDrain(self, mover: Mover | None) -> None:
        """
        Drain through C{mover} when the drain begins, whoever begins it.
        """
        self._nextMover = mover

    def resume(self) -> None:
        """
        Take the drain back: accept and serve as before it began.

        Connections already told to close stay so: a response sent with
        C{Connection: close}, a WebSocket sent its close frame, an HTTP/2
        connection sent its GOAWAY.  The others (idle, or with a response not
        yet begun) are kept alive again.  A later L{drain} drains afresh;
        the L{Deferred}s of this drain, from L{drain} and L{whenDraining},
        never fire if they have not yet.

        @since: 0.2
        """
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self._accepting = True
        self._drainStarted = self._timeout = self._result = self._mover = self._nextMover = None
        self._completed = self._abortedConnections = self._abortedRequests = self._moved = 0
        self._tlsUnanswered = 0
        self._drained, self._drainBegan = Once(), Once()
        for protocol in list(self._connections):
            protocol.stopDraining()
        self._log.info("Resumed {endpoint}: the drain is taken back", endpoint=self.name, phase="drain-resumed")

    def abortAll(self) -> None:
        """
        Abort every open connection now, counting the requests cut.  The
        drain, if any, then ends as soon as the connections are gone.
        """
        if not self._connections:
            return
        connections = len(self._connections)
        requests = self.inFlightCount()
        self._abortedConnections += connections
        self._abortedRequests += requests
        self._log.warn(
            "Aborting {connections} connections of {endpoint} with {requests} requests in flight",
            endpoint=self.name,
            connections=connections,
            requests=requests,
            phase="drain-aborted",
        )
        for protocol in list(self._connections):
            try:
                protocol.abort()
            except Exception:
                self._log.failure(
                    "Aborting a connection of {endpoint} failed", endpoint=self.name, phase="drain-error"
                )

    def _startDrain(self, timeout: float | None) -> None:
        self._drainStarted = self._clock.seconds()
        self._timeout = timeout
        self._atStart = (len(self._connections), self.inFlightCount())
        self._log.info(
            "Draining {endpoint}: {connections} connections, {inFlight} requests in flight,"
            " deadline {timeout} s",
            endpoint=self.name,
            connections=self._atStart[0],
            inFlight=self._atStart[1],
            timeout=timeout,
            phase="drain-started",
        )
        # Every connection drains first, so that responses the application
        # ends when it hears of the drain are answered (and counted) as
        # drained ones.
        for protocol in list(self._connections):
            try:
                protocol.startDraining()
            except Exception:
                self._drainFailed(protocol)
        self._drainBegan.happen(None)
        if timeout is not None and self._connections:
            self._deadline = self._clock.callLater(timeout, self.abortAll)
        self._maybeDrained()

    def _drainFailed(self, protocol: _TrackedChannelProtocol) -> None:
        """
        C{protocol} failed to start draining: its state is not known, so it
        is aborted and counted, and the drain of the others goes on.
        """
        self._log.failure(
            "A connection of {endpoint} failed to start draining; aborting it",
            endpoint=self.name,
            phase="drain-error",
        )
        self._abortedConnections += 1
        try:
            self._abortedRequests += protocol.inFlight()
            protocol.abort()
        except Exception:
            self._log.failure("Aborting a connection of {endpoint} failed", endpoint=self.name, phase="drain-error")

    def _maybeDrained(self) -> None:
        if self._connections or self._drainStarted is None or self._result is not None:
            return
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._result = DrainResult(
            endpoint=self.name,
            connections=self._atStart[0],
            inFlight=self._atStart[1],
            completed=self._completed,
            abortedConnections=self._abortedConnections,
            abortedRequests=self._abortedRequests,
            elapsed=self._clock.seconds() - self._drainStarted,
            moved=self._moved,
        )
        self._log.info(
            "Drained {endpoint} in {elapsed:.3f} s: {completed} requests completed,"
            " {abortedRequests} cut, {abortedConnections} connections aborted,"
            " {moved} moved to the successor",
            endpoint=self.name,
            elapsed=self._result.elapsed,
            completed=self._result.completed,
            abortedRequests=self._result.abortedRequests,
            abortedConnections=self._result.abortedConnections,
            moved=self._result.moved,
            tlsCloseUnanswered=self._tlsUnanswered,
            phase="drain-finished",
        )
        self._drained.happen(self._result)

    def _connectionLost(self, protocol: _TrackedChannelProtocol, moved: bool = False) -> None:
        if moved:
            self._moved += 1
        self._connections.discard(protocol)
        if self._connections:
            return
        if self._siteStopPending:
            self._siteStopPending = False
            self._site.doStop()
        self._maybeDrained()


def _factoryFor(request: Any) -> DrainingFactory | None:
    channel = getattr(request, "channel", None)
    # PRIVATE: an HTTP/2 request's channel is its H2Stream, whose _conn is
    # the H2Connection the tracked protocol marked.
    channel = getattr(channel, "_conn", channel)
    return getattr(channel, "_tracker", None)


def whenDraining(request: Any) -> Deferred[None]:
    """
    Learn when the endpoint serving C{request} starts to drain, so that a
    streaming or long-poll response can finish early.

    @param request: A L{twisted.web.server.Request}.
    @return: A L{Deferred} that fires with L{None} when the drain begins (at
        once if it has).  For a request not served through a
        L{DrainingFactory} it never fires.  Cancel it when the response ends.
    """
    factory = _factoryFor(request)
    if factory is None:
        return Deferred()
    return factory.whenDraining()


def isDraining(request: Any) -> bool:
    """
    C{True} when the endpoint serving C{request} is draining.
    """
    factory = _factoryFor(request)
    return factory is not None and factory.draining
