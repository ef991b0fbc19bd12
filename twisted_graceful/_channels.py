# -*- test-case-name: tests.test_drain -*-
"""
How each connection of a drained L{twisted.web.server.Site} drains: an
HTTP/1.1 channel answers with C{Connection: close} and closes once idle (or,
during a restart, moves to the successor once idle, through the drain's
mover), a channel upgraded to a WebSocket is closed with a close frame, and
an HTTP/2 connection hands over to L{twisted_graceful._h2drain}.
L{twisted_graceful._drain.DrainingFactory} counts them and ends the drain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.web import http
from twisted.web.http_headers import Headers

from ._h2drain import BUSY_BOUND, HTTP2Drain
from ._movable import ConnectionMoved

if TYPE_CHECKING:
    from ._drain import DrainingFactory

# PRIVATE: the protocol Site builds by default, which switches between
# HTTP/1.1 and HTTP/2 after ALPN.  Subclassing it is the only way to keep
# HTTP/2 and track every connection.
_GenericHTTPChannelProtocol: Any = http._GenericHTTPChannelProtocol


class _DrainingHTTPChannel(http.HTTPChannel):
    """
    An HTTP/1.1 channel that co-operates with L{DrainingFactory}: once the
    drain begins, responses not yet started carry C{Connection: close}, and
    the connection closes after it has been quiet for the idle grace.

    When the drain has a mover (a restart that hands connections to the
    successor), a connection that may move is offered to the successor
    instead, whenever it is between requests: at the start of the drain,
    after each response, and when its idle grace ends; its responses then
    keep it alive.  A connection the successor refused is not offered again.
    """

    _tracker: DrainingFactory
    _wire: Any = None
    _lastActive: float = 0.0
    _idleCall: IDelayedCall | None = None
    _moving: Any = None
    _moveRefused: bool = False
    _closeCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._lastActive = self._tracker._clock.seconds()
        super().connectionMade()

    def requestDone(self, request: http.Request) -> None:
        self._lastActive = self._tracker._clock.seconds()
        super().requestDone(request)

    def _startDraining(self) -> None:
        """
        The drain began: from now on, answer with C{Connection: close} and
        close the connection once it is idle.

        Until now the hot path carried no drain logic: the drain's versions
        of C{dataReceived}, C{writeHeaders} and C{requestDone} are installed
        on this instance only now.  A channel upgraded to a WebSocket has its
        own C{dataReceived} already and keeps it.
        """
        upgraded = vars(self).get("dataReceived")
        if upgraded is not None:
            self._closeUpgradedChannel(upgraded)
            return
        self.dataReceived = self._drainingDataReceived  # type: ignore[method-assign]
        self.writeHeaders = self._drainingWriteHeaders  # type: ignore[method-assign]
        self.requestDone = self._drainingRequestDone  # type: ignore[method-assign]
        if not self.requests:
            if self._tryMove():
                return
            # PRIVATE: LineReceiver._buffer holds a request line or headers
            # received in part; the client is still sending, so its grace
            # counts from now.
            if self._buffer:
                self._lastActive = self._tracker._clock.seconds()
            self._closeWhenIdle()

    def _stopDraining(self) -> None:
        """
        The drain was taken back: unless the connection is closing (its
        response said C{Connection: close}, or it was closed idle), it is
        kept alive again, and answers as before the drain.
        """
        if self._wire is not None:
            return  # A WebSocket whose close began.
        self._moveRefused = False
        _cancelIdle(self)
        for name in ("dataReceived", "writeHeaders", "requestDone"):
            vars(self).pop(name, None)

    def _closeUpgradedChannel(self, upgraded: Any) -> None:
        """
        Close the WebSocket that C{upgraded} (the upgraded C{dataReceived})
        belongs to.  The close is under way once begun; a TLS socket stays
        open until the peer answers the TLS close, which a client may never
        do, so L{_closeStuck} ends it after the idle grace.
        """
        self._wire = getattr(upgraded, "__self__", None)
        _closeUpgraded(self._wire, self._tracker._closeCode)
        self._idleCall = self._tracker._clock.callLater(self._tracker._idleGrace, self._closeStuck)

    def _drainingDataReceived(self, data: bytes) -> None:
        self._lastActive = self._tracker._clock.seconds()
        _cancelIdle(self)
        http.HTTPChannel.dataReceived(self, data)
        upgraded = vars(self).get("dataReceived")
        if getattr(upgraded, "__func__", None) is not _DrainingHTTPChannel._drainingDataReceived:
            # The request upgraded the channel to a WebSocket during the
            # drain: close it as one open when the drain began.
            if getattr(upgraded, "__self__", None) is not None:
                self._closeUpgradedChannel(upgraded)
            return
        if not self.requests and self.transport:
            # A partial request line: give the client the grace to finish it.
            self._closeWhenIdle()

    def _drainingWriteHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        # PRIVATE: bytes already received after this request are pipelined
        # requests: HTTPChannel._dataBuffer holds them while a request is in
        # flight, LineReceiver._buffer while this request is being parsed.
        # They must be answered, so the connection stays open for them; the
        # last of them is answered with Connection: close.  The end of a
        # request body leaves an empty chunk in _dataBuffer: only bytes
        # count.
        if not (any(self._dataBuffer) or self._buffer or self._mayMove()):
            self.persistent = False
            if isinstance(headers, Headers):
                headers.setRawHeaders(b"Connection", [b"close"])
            else:
                headers.append((b"Connection", b"close"))
        http.HTTPChannel.writeHeaders(self, version, code, reason, headers)

    def _drainingRequestDone(self, request: http.Request) -> None:
        self._tracker._completed += 1
        self._lastActive = self._tracker._clock.seconds()
        http.HTTPChannel.requestDone(self, request)
        if self.persistent and not self.requests and not self._tryMove():
            self._closeWhenIdle()

    def _mayMove(self) -> bool:
        mover = self._tracker._mover
        return mover is not None and not self._moveRefused and mover.mayMove(self)

    def _tryMove(self) -> bool:
        """
        Offer this connection to the successor, if the drain has a mover and
        the connection may move now.

        @return: C{True} if the offer is under way: this process reads
            nothing from the connection until the successor answers.
        """
        mover = self._tracker._mover
        if mover is None or self._moveRefused or self._moving is not None:
            return False
        if not mover.offer(self, self._notMoved):
            return False
        self._moving = mover
        _cancelIdle(self)
        return True

    def _notMoved(self) -> None:
        """
        The successor refused this connection (or could not answer): it
        drains here, as if it had never been offered.
        """
        self._moving = None
        if not self._tracker.draining:
            return  # The drain was taken back (a rollback).
        self._moveRefused = True
        if not self.requests and self.transport:
            self._closeWhenIdle()

    def abortMoving(self) -> bool:
        """
        If this connection is offered to the successor, forget it here
        without a byte on the wire (the successor may hold it already).

        @return: C{True} if it was being offered.
        """
        if self._moving is None or self.transport is None or getattr(self.transport, "disconnected", False):
            return False
        self._moving.abandon(self)
        return True

    def _closeWhenIdle(self) -> None:
        """
        Close the connection when it has received nothing and had no request
        in flight for the idle grace, counted from its last activity.
        """
        if self._idleCall is not None:
            self._idleCall.cancel()
        delay = self._lastActive + self._tracker._idleGrace - self._tracker._clock.seconds()
        if delay <= 0:
            self._idleCall = None
            if not self._tryMove():
                self.loseConnection()
        else:
            self._idleCall = self._tracker._clock.callLater(delay, self._idleExpired)

    def _closeStuck(self) -> None:
        """
        The upgraded connection's close began an idle grace ago and its
        socket is still open: abort it.

        When the WebSocket close handshake is done, nothing is lost: the
        client closed its end of the WebSocket, and only the TLS close is
        unanswered (clients that wait for the server to close the TCP
        connection, as RFC 6455 asks, never answer it).  Otherwise the
        client never answered the close frame, and the abort is counted.
        """
        self._idleCall = None
        if self.transport is None or getattr(self.transport, "disconnected", False):
            return
        done = _wsState(self._wire) == "CLOSED"
        self._tracker._log.info(
            "Aborting a WebSocket of {endpoint} whose peer did not close its socket"
            " (close handshake {handshake})",
            endpoint=self._tracker.name,
            handshake="done" if done else "unanswered",
            phase="drain-stuck-close",
        )
        if not done:
            self._tracker._abortedConnections += 1
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def _idleExpired(self) -> None:
        self._idleCall = None
        if not self.requests and not self._tryMove():
            self.loseConnection()

    def loseConnection(self) -> None:
        """
        Close once the response is written; during a drain, see that a TLS
        close the client leaves unanswered does not hold the drain.
        """
        super().loseConnection()
        if self._tracker.draining and self._closeCall is None and _overTLS(self.transport):
            self._closeCall = self._tracker._clock.callLater(self._tracker._idleGrace, self._closeUnanswered)

    def _closeUnanswered(self) -> None:
        """
        This TLS connection's close began an idle grace ago and it is still
        open.

        Twisted's TLS keeps the socket open after its close_notify until the
        client answers with its own, and many clients never do: they notice
        the close only when they next use the connection (RFC 8446 and RFC
        5246 let the side that closes not wait for the answer).  Once the
        close_notify is sent, every byte of the responses is sent before it:
        close the socket under TLS (a FIN, not a reset), and nothing is lost.
        A close_notify not sent yet means a response is still being written:
        the drain's deadline bounds that.
        """
        self._closeCall = None
        if self.transport is None or getattr(self.transport, "disconnected", False):
            return
        if _closeBelowTLS(self.transport):
            self._tracker._tlsUnanswered += 1

    def connectionLost(self, reason: Any = None) -> None:
        _cancelIdle(self)
        if self._closeCall is not None and self._closeCall.active():
            self._closeCall.cancel()
        self._closeCall = None
        super().connectionLost(reason)


def _overTLS(transport: Any) -> bool:
    # PRIVATE: twisted.protocols.tls.TLSMemoryBIOProtocol, the transport of
    # a connection of a TLS endpoint, keeps its pyOpenSSL connection in
    # _tlsConnection and the TCP transport it wraps in transport.
    return getattr(transport, "_tlsConnection", None) is not None and getattr(transport, "transport", None) is not None


def _closeBelowTLS(transport: Any) -> bool:
    """
    If the TLS C{transport} has sent its close_notify, close the connection
    under it, without waiting for the peer's.

    @return: C{True} if it did.
    """
    from OpenSSL.SSL import SENT_SHUTDOWN

    if not transport._tlsConnection.get_shutdown() & SENT_SHUTDOWN:
        return False
    transport.transport.loseConnection()
    return True


def _cancelIdle(channel: Any) -> None:
    idleCall = getattr(channel, "_idleCall", None)
    if idleCall is not None and idleCall.active():
        idleCall.cancel()
    if idleCall is not None:
        channel._idleCall = None


def _closeUpgraded(wire: Any, closeCode: tuple[int, str]) -> None:
    """
    Start the close of a channel upgraded to a WebSocket, unless its close
    has begun already.
    """
    # PRIVATE: twisted.web.websocket upgrades a channel by replacing its
    # dataReceived with the bound method of its wire protocol, whose
    # loseConnection(code, reason) sends a close frame and whose _wsconn is
    # the wsproto connection.  Once either side has sent its close frame
    # (wsproto's state is no longer OPEN) the close is under way: a TLS
    # socket can stay open after the handshake, until its own close is done.
    if wire is None or not callable(getattr(wire, "loseConnection", None)):
        return
    state = _wsState(wire)
    if state is not None and state != "OPEN":
        return
    code, reason = closeCode
    wire.loseConnection(code, reason)


def _wsState(wire: Any) -> str | None:
    """
    The name of the wsproto state of an upgraded channel's wire protocol
    (C{OPEN}, C{CLOSED}, ...), or L{None} if it has none.
    """
    state = getattr(getattr(wire, "_wsconn", None), "state", None)
    return getattr(state, "name", None)


class _TrackedChannelProtocol(_GenericHTTPChannelProtocol):  # type: ignore[misc]
    """
    The protocol of every connection of a drained L{Site}: it registers with
    its L{DrainingFactory} for as long as the connection is open, whatever
    channel (HTTP/1.1, HTTP/2, or an upgraded WebSocket) serves it.
    """

    _tracker: DrainingFactory
    _http2Drain: HTTP2Drain | None = None
    _lastActive: float = 0.0

    def makeConnection(self, transport: Any) -> None:
        self._tracker._connections.add(self)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self._lastActive = self._tracker._clock.seconds()
        before = self._channel
        super().dataReceived(data)
        # The first bytes switch to HTTP/2 if ALPN chose it: the new channel
        # learns its tracker too, for whenDraining(request).
        if not hasattr(self._channel, "_tracker"):
            self._channel._tracker = self._tracker
        if self._channel is not before:
            # The HTTP/1.1 channel is left behind: its idle close must not
            # close the HTTP/2 connection; a drain that began before the
            # switch drains the new channel.
            _cancelIdle(before)
            if self._tracker.draining and self._http2Drain is None:
                self.startDraining()

    def connectionLost(self, reason: Any) -> None:
        if self._http2Drain is not None:
            self._http2Drain.stop()
        # An upgraded channel's own connectionLost is replaced by the
        # upgrade: cancel its timer here.
        _cancelIdle(self._channel)
        try:
            super().connectionLost(reason)
        finally:
            moved = isinstance(getattr(reason, "value", None), ConnectionMoved)
            self._tracker._connectionLost(self, moved)

    @property
    def currentChannel(self) -> Any:
        # PRIVATE: _channel is the HTTPChannel, or the H2Connection after ALPN.
        return self._channel

    def inFlight(self) -> int:
        """
        How many requests this connection has in flight.
        """
        channel = self.currentChannel
        if isinstance(channel, http.HTTPChannel):
            # PRIVATE: _waitingForTransport is set while the transport's
            # buffer is full: a response is still on its way to a client
            # that does not read it.
            return len(channel.requests) or int(channel._waitingForTransport)
        return len(getattr(channel, "streams", ()))

    def startDraining(self) -> None:
        channel = self.currentChannel
        if isinstance(channel, _DrainingHTTPChannel):
            channel._startDraining()
        elif self._http2Drain is None and hasattr(channel, "streams") and hasattr(channel, "conn"):
            # (A connection already sent its GOAWAY by a drain that was
            # taken back goes on draining as it was.)
            timeout = self._tracker._timeout
            busyBound = BUSY_BOUND if timeout is None else min(BUSY_BOUND, timeout / 2)
            tracker = self._tracker
            self._http2Drain = HTTP2Drain(
                channel, tracker._clock, tracker._idleGrace, busyBound, self._streamDone, self._closeHTTP2
            )
            self._http2Drain.start(self._lastActive)

    def stopDraining(self) -> None:
        channel = self.currentChannel
        if isinstance(channel, _DrainingHTTPChannel):
            channel._stopDraining()
        # An HTTP/2 connection sent its GOAWAY: it finishes its streams and
        # closes, and its client opens a new connection.

    def _streamDone(self) -> None:
        self._tracker._completed += 1

    def _closeHTTP2(self) -> None:
        # The connection is the transport's producer: a TLS transport closes
        # only once its producer is gone (HTTPChannel.loseConnection does the
        # same).
        transport = self.currentChannel.transport
        if transport is not None:
            transport.unregisterProducer()
            transport.loseConnection()

    def abort(self) -> None:
        channel = self.currentChannel
        if isinstance(channel, _DrainingHTTPChannel) and channel.abortMoving():
            return
        transport = channel.transport
        if transport is not None:
            transport.abortConnection()
