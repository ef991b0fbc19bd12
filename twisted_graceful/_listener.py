# -*- test-case-name: tests.test_listener -*-
"""
L{Listener}: one endpoint's listening socket.  The library binds it (or
takes it over from a predecessor or systemd) and has the reactor adopt it,
so that it can be paused, resumed, handed to a successor or closed for good
without ever being shut down under a process that shares it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._drain import DrainingFactory
from ._endpoint import ListenAddress, adoptSocket, bindSocket, boundAddress


def maybeGlobalReactor(reactor: Any) -> Any:
    """
    C{reactor}, or the global reactor if it is L{None}.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        return globalReactor
    return reactor


class Listener:
    """
    The listening socket of one endpoint.

    @ivar address: The endpoint.
    @ivar factory: What the accepted connections are built by.
    @ivar port: The reactor's port while this process has one, else L{None}.
    @ivar inheritedFileno: A listening socket to adopt instead of binding a
        new one (from a predecessor or systemd), or L{None}.
    @ivar fromSystemd: C{inheritedFileno} was passed by systemd, whose
        C{Backlog=} it keeps; a socket from a predecessor gets this
        endpoint's C{backlog}.
    @ivar paused: The port is kept but not read: connections queue in the
        kernel until L{resume} or L{close}.
    """

    _log = Logger()
    _bindSocket = staticmethod(bindSocket)
    _closeFileno = staticmethod(os.close)
    _setNonBlocking = staticmethod(lambda fileno: os.set_blocking(fileno, False))

    def __init__(self, address: ListenAddress, factory: DrainingFactory, reactor: Any = None) -> None:
        self.address = address
        self.factory = factory
        self._reactor = reactor
        self.port: IListeningPort | None = None
        self.inheritedFileno: int | None = None
        self.fromSystemd = False
        self.paused = False
        self._socket: socket.socket | Any = None

    def listeningAddress(self) -> str | None:
        """
        Where this endpoint listens (C{127.0.0.1:8080}, a path), or L{None}
        while it has no port.
        """
        return None if self.port is None else boundAddress(self.port)

    def fileno(self) -> int:
        """
        The listening socket's descriptor, to hand to a successor.
        """
        if self.port is None:
            raise RuntimeError(f"{self.address.description} is not listening.")
        return self.port.fileno()  # type: ignore[attr-defined,no-any-return]

    def bind(self) -> None:
        """
        Bind the socket now, unless it is inherited or bound already.

        @raise ListenFailed: The socket cannot be bound.
        """
        if self.port is None and self._socket is None and self.inheritedFileno is None:
            self._socket = self._bindSocket(self.address)

    def unbind(self) -> None:
        """
        Close a socket bound by L{bind} that is not listening yet.
        """
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def listen(self) -> None:
        """
        Have the reactor adopt the inherited socket, or the one L{bind}
        binds, and accept on it.

        @raise ListenFailed: The socket cannot be bound.
        """
        if self.port is not None:
            return
        reactor = maybeGlobalReactor(self._reactor)
        if self.inheritedFileno is not None:
            fileno, self.inheritedFileno = self.inheritedFileno, None
            try:
                # The reactor would hang inside accept() on a blocking socket
                # (systemd passes them blocking).
                self._setNonBlocking(fileno)
                self.port = adoptSocket(
                    reactor, self.address, fileno, self.factory, applyBacklog=not self.fromSystemd
                )
            finally:
                self._closeFileno(fileno)
            how = "inherited"
        else:
            self.bind()
            sock, self._socket = self._socket, None
            assert sock is not None
            try:
                self.port = adoptSocket(reactor, self.address, sock.fileno(), self.factory)
            finally:
                sock.close()
            how = "bound"
        self._log.info(
            "Listening on {endpoint} at {address} ({how})",
            endpoint=self.address.description,
            identity=self.address.identity,
            address=self.listeningAddress(),
            how=how,
        )

    def pause(self) -> None:
        """
        Stop accepting, keeping the socket: connections wait in the kernel's
        queue (for a successor that shares the socket, or for L{resume}).
        """
        if self.port is not None and not self.paused:
            self.port.stopReading()  # type: ignore[attr-defined]
            self.paused = True

    def resume(self) -> None:
        """
        Accept again after L{pause}, starting with what the kernel queued.
        """
        if self.port is not None and self.paused:
            self.port.startReading()  # type: ignore[attr-defined]
            self.paused = False

    def handOver(self) -> Deferred[Any] | None:
        """
        Close this process's copy of the socket, which a successor shares:
        never shut down, and a UNIX socket's file is left in place.

        @return: A L{Deferred} that fires when the port has closed, if that
            takes a reactor turn, else L{None}.
        """
        port, self.port = self.port, None
        self.factory.stopAccepting()
        if port is None:
            return None
        if self.address.family == socket.AF_UNIX:
            # A UNIX port unlinks its socket file when it stops listening,
            # which would take the successor's address away: stop reading
            # and close this process's descriptor instead.
            port.stopReading()  # type: ignore[attr-defined]
            port.socket.close()  # type: ignore[attr-defined]
            self.factory.doStop()
            return None
        # The port closes on the next reactor turn; the successor's
        # descriptor keeps the socket and its queue.
        stopped = port.stopListening()
        return stopped if isinstance(stopped, Deferred) else None

    def close(self) -> None:
        """
        Close the socket for good, now, having first accepted every
        connection the kernel queued on it (see L{closeAfterAccepting}).
        """
        port, self.port = self.port, None
        if port is not None:
            closeAfterAccepting(port, self.factory)
        else:
            self.factory.stopAccepting()


def closeAfterAccepting(port: IListeningPort, factory: DrainingFactory) -> None:
    """
    Close a listening port for good, now, having first accepted every
    connection the kernel queued on it.

    Closing a listening socket resets the connections queued on it that
    nobody accepted, though their clients have sent their requests: those
    are accepted and served (and drained) instead.  A connection that
    arrives after the close is refused, never reset.  The port is closed at
    once rather than on the next reactor turn (as C{stopListening} does), so
    that no connection is queued in between.
    """
    doRead = getattr(port, "doRead", None)
    connectionLost = getattr(port, "connectionLost", None)
    if doRead is None or connectionLost is None:
        factory.stopAccepting()
        port.stopListening()
        return
    # PRIVATE: twisted.internet.tcp.Port (and unix.Port): doRead accepts up
    # to numberAccepts queued connections, stopping at the first EAGAIN;
    # connectionLost closes the socket (a UNIX port unlinks its file first)
    # and stops the factory, which loseConnection defers by a reactor turn.
    port.stopReading()  # type: ignore[attr-defined]
    port.disconnecting = True  # type: ignore[attr-defined]
    port.numberAccepts = 2**16  # type: ignore[attr-defined]
    doRead()
    factory.stopAccepting()
    connectionLost(Failure(CONNECTION_DONE))
