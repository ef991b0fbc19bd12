# -*- test-case-name: tests.test_handoff_select -*-
"""
Which connections may move to a successor process, and how one leaves this
process without a byte on the wire.

A connection may move only when the successor can take it up exactly where
this process leaves it: a plain HTTP/1.1 channel over a TCP or UNIX socket
(not TLS, whose state lives in this process; not HTTP/2; not a WebSocket or
other upgraded channel), between two requests, with no byte received and
not yet parsed, with every byte of its last response handed to the kernel,
and not closing.  L{whyNotMovable} decides from a L{ConnectionState};
L{stateOf} reads that state from a live channel.

This module, with L{twisted_graceful._drain}, L{twisted_graceful._channels}
and L{twisted_graceful._h2drain}, is where private Twisted names are used;
each use is marked C{PRIVATE} and pinned by
C{tests.test_handoff_select.PrivateTwistedNamesTests}.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from attrs import define, evolve, frozen
from twisted.internet import error, tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.python.failure import Failure
from twisted.web import http

try:
    from twisted.internet import unix
except ImportError:  # pragma: no cover (not POSIX)
    unix = None  # type: ignore[assignment]

# What a connection is carried by.
TCP = "tcp"
UNIX = "unix"
TLS = "tls"
OTHER = "other"

# What speaks on it.
HTTP11 = "http/1.1"
HTTP2 = "h2"
UPGRADED = "upgraded"

# Why a connection does not move (L{whyNotMovable}).
NOT_A_SOCKET = "not a plain TCP or UNIX socket"
ENCRYPTED = "TLS"
NOT_HTTP11 = "HTTP/2"
IS_UPGRADED = "upgraded (WebSocket)"
IN_FLIGHT = "request in flight"
UNPARSED = "request bytes received"
UNSENT = "response not yet sent"
CLOSING = "closing"


class ConnectionMoved(error.ConnectionDone):
    """
    The connection was handed to the successor process, which serves it
    from now on; this process closed its own descriptor of it, sending
    nothing.
    """


@frozen
class ConnectionState:
    """
    What decides whether a connection may move.

    @ivar transport: L{TCP}, L{UNIX}, L{TLS} or L{OTHER}.
    @ivar channel: L{HTTP11}, L{HTTP2} or L{UPGRADED}.
    @ivar requests: Requests received and not yet answered.
    @ivar unparsed: Bytes received and not yet parsed into a request.
    @ivar unsent: Bytes written by this process and not yet handed to the
        kernel.
    @ivar closing: The connection closes after its response (it said
        C{Connection: close}, or the client did), or is closing now.
    """

    transport: str
    channel: str
    requests: int = 0
    unparsed: int = 0
    unsent: int = 0
    closing: bool = False


def whyNotMovable(state: ConnectionState) -> str | None:
    """
    Why a connection in C{state} may not move to the successor now, or
    L{None} if it may.

    Only L{UNSENT} can change by waiting for the kernel alone; L{IN_FLIGHT}
    changes once the response is done; the others are for good (or until
    the client sends a whole request).
    """
    if state.transport == TLS:
        return ENCRYPTED
    if state.transport not in (TCP, UNIX):
        return NOT_A_SOCKET
    if state.channel == UPGRADED:
        return IS_UPGRADED
    if state.channel != HTTP11:
        return NOT_HTTP11
    if state.closing:
        return CLOSING
    if state.requests:
        return IN_FLIGHT
    if state.unparsed:
        return UNPARSED
    if state.unsent:
        return UNSENT
    return None


def transportKind(transport: Any) -> str:
    """
    L{TCP}, L{UNIX}, L{TLS} or L{OTHER} for C{transport}, the transport of
    an HTTP channel.
    """
    if ISSLTransport.providedBy(transport) or getattr(transport, "TLS", False):
        # A TLS endpoint wraps the socket in TLSMemoryBIOProtocol; a socket
        # that started TLS itself says so in TLS.
        return TLS
    if unix is not None and type(transport) is unix.Server:
        return UNIX
    if type(transport) is tcp.Server:
        return TCP
    return OTHER


def unsentBytes(transport: Any) -> int:
    """
    Bytes written to C{transport} (a L{twisted.internet.abstract.FileDescriptor})
    and not yet handed to the kernel.
    """
    # PRIVATE: FileDescriptor buffers writes in dataBuffer (from offset) and
    # in _tempDataBuffer, whose length is _tempDataLen, until doWrite sends
    # them.
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # type: ignore[no-any-return]


def stateOf(channel: Any) -> ConnectionState:
    """
    The L{ConnectionState} of C{channel}: the current channel of a
    connection of a drained site (an L{http.HTTPChannel}, or the
    C{H2Connection} after ALPN chose HTTP/2).
    """
    transport = channel.transport
    kind = transportKind(transport)
    if not isinstance(channel, http.HTTPChannel):
        return ConnectionState(kind, HTTP2)
    # twisted.web.websocket upgrades a channel by replacing its dataReceived
    # with a method of another object (the drain installs one of its own).
    dataReceived = vars(channel).get("dataReceived")
    if dataReceived is not None and getattr(dataReceived, "__self__", None) is not channel:
        return ConnectionState(kind, UPGRADED)
    closing = (
        not channel.persistent
        or transport is None
        or bool(getattr(transport, "disconnecting", False) or getattr(transport, "disconnected", False))
        # PRIVATE: _AbortingMixin sets _aborting when abortConnection is
        # called, before the transport is gone.
        or bool(getattr(transport, "_aborting", False))
    )
    # PRIVATE: LineReceiver._buffer holds a request line or headers
    # received in part; HTTPChannel._dataBuffer holds bytes received behind
    # a request in flight.
    unparsed = len(channel._buffer) + sum(map(len, channel._dataBuffer))
    unsent = unsentBytes(transport) if kind in (TCP, UNIX) else 0
    # PRIVATE: _waitingForTransport is set while the transport's buffer is
    # full.
    if channel._waitingForTransport:
        unsent = max(unsent, 1)
    return ConnectionState(kind, HTTP11, len(channel.requests), unparsed, unsent, closing)


def flush(transport: Any) -> bool:
    """
    Hand what C{transport} buffered to the kernel now, as much as it takes.

    @return: C{True} if nothing is left in this process.
    """
    if unsentBytes(transport) == 0:
        return True
    # IWriteDescriptor.doWrite, what the reactor calls once the socket is
    # writable.  A failure is left for the reactor to find on its own
    # next write.
    if transport.doWrite() is not None:
        return False
    return unsentBytes(transport) == 0


def detach(transport: Any) -> None:
    """
    Forget the connection of C{transport} (a L{tcp.Server} or
    L{unix.Server}) in this process, sending nothing on it: stop watching
    it, close this process's descriptor without C{shutdown(2)} (the
    successor holds another descriptor of the same socket, which stays
    open), and tell the protocol it is gone with L{ConnectionMoved}.
    """
    # PRIVATE: tcp._SocketCloser._closeSocket calls shutdown(2) before
    # close() when _shouldShutdown is set (the class default), which would
    # end the connection for the successor too; connectionLost with a
    # reason other than ConnectionAborted closes without SO_LINGER.
    transport._shouldShutdown = False
    transport.connectionLost(Failure(ConnectionMoved()))


class _Sender(Protocol):
    @property
    def open(self) -> bool: ...

    def offer(
        self, identity: str, family: int, fileno: int, taken: Callable[[], None], refused: Callable[[str], None]
    ) -> bool: ...


@define(eq=False)
class EndpointMover:
    """
    Moves the connections of one endpoint to the successor, through its
    L{twisted_graceful._handoff.HandoffSender}.

    @ivar identity: The endpoint's identity, which the successor serves.
    @ivar family: The address family of its connections.
    """

    _sender: _Sender
    identity: str
    family: int

    def mayMove(self, channel: Any) -> bool:
        """
        Whether the connection of C{channel} will move once it is between
        requests with its response sent: a response that will be followed
        by a move need not say C{Connection: close}.
        """
        if not self._sender.open:
            return False
        state = evolve(stateOf(channel), requests=0, unparsed=0, unsent=0)
        return whyNotMovable(state) is None

    def offer(self, channel: Any, refused: Callable[[], None]) -> bool:
        """
        Move the connection of C{channel} now, if it may move.

        Until the successor answers, this process reads nothing from it.
        If the successor takes it, it is closed here without a byte on the
        wire (L{detach}); if not, it is read again, and C{refused} is
        called, for the drain to go on with it.

        @return: C{True} if the move is under way; C{False} if the
            connection may not move now (nothing changed).
        """
        if not self._sender.open:
            return False
        transport = channel.transport
        reason = whyNotMovable(stateOf(channel))
        if reason == UNSENT and flush(transport):
            reason = whyNotMovable(stateOf(channel))
        if reason is not None:
            return False
        transport.pauseProducing()
        timeout = channel.setTimeout(None)

        def taken() -> None:
            if not transport.disconnected:
                detach(transport)

        def notTaken(why: str) -> None:
            if transport.disconnected:
                return
            channel.setTimeout(timeout)
            transport.resumeProducing()
            refused()

        if self._sender.offer(self.identity, self.family, transport.fileno(), taken, notTaken):
            return True
        channel.setTimeout(timeout)
        transport.resumeProducing()
        return False

    def abandon(self, channel: Any) -> None:
        """
        Forget the connection of C{channel}, offered and not yet answered,
        without a byte on the wire: the successor may hold it already (the
        drain's deadline came first).
        """
        detach(channel.transport)
