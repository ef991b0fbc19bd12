"""
Tests for L{twisted_graceful._listener}: against Twisted's real TCP and UNIX
port classes (driven by a memory reactor, on real sockets bound to
127.0.0.1 or a temporary path), so that the private port internals the
listener relies on are pinned.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._endpoint import parseEndpoint
from twisted_graceful._listener import Listener


class _Counting(Factory):
    def __init__(self) -> None:
        self.built = 0
        self.stopped = 0

    def buildProtocol(self, addr: Any) -> Protocol:
        self.built += 1
        return Protocol()

    def stopFactory(self) -> None:
        self.stopped += 1


class _Factory:
    """
    The part of a L{DrainingFactory} a L{Listener} uses.
    """

    def __init__(self) -> None:
        self.inner = _Counting()
        self.accepting = True

    def buildProtocol(self, addr: Any) -> Any:
        return self.inner.buildProtocol(addr) if self.accepting else None

    def doStart(self) -> None:
        self.inner.doStart()

    def doStop(self) -> None:
        self.inner.doStop()

    def stopAccepting(self) -> None:
        self.accepting = False


class _RealPortReactor(MemoryReactorClock):
    """
    Adopts sockets into Twisted's real port classes, as the real reactor's
    C{adoptStreamPort} does; the memory reactor only records readers.
    """

    def adoptStreamPort(self, fileno: int, family: int, factory: Any) -> Any:
        if family == socket.AF_UNIX:
            port: Any = unix.Port._fromListeningDescriptor(self, fileno, factory)
        else:
            port = tcp.Port._fromListeningDescriptor(self, fileno, family, factory)
        port.startListening()
        return port


class ListenerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _RealPortReactor()
        self.factory = _Factory()
        self.clients: list[socket.socket] = []

    def listener(self, description: str = "tcp:0:interface=127.0.0.1") -> Listener:
        listener = Listener(parseEndpoint(description), self.factory, self.reactor)  # type: ignore[arg-type]
        listener.listen()
        self.addCleanup(lambda: listener.port is not None and listener.port.connectionLost(None))  # type: ignore[attr-defined]
        return listener

    def connect(self, listener: Listener) -> socket.socket:
        assert listener.port is not None
        host = listener.port.getHost()
        if listener.address.family == socket.AF_UNIX:
            client = socket.socket(socket.AF_UNIX)
            target: Any = host.name
        else:
            client = socket.socket()
            target = (host.host, host.port)
        self.clients.append(client)
        self.addCleanup(client.close)
        client.setblocking(False)
        try:
            client.connect(target)
        except BlockingIOError:
            pass
        return client

    def test_pauseKeepsQueueResumeReads(self) -> None:
        """
        A paused listener is no reader of the reactor but keeps its socket:
        a connection made meanwhile waits in the kernel, and is accepted
        after L{Listener.resume}.
        """
        listener = self.listener()
        port = listener.port
        listener.pause()
        self.assertTrue(listener.paused)
        self.assertNotIn(port, self.reactor.readers)
        self.connect(listener)
        listener.resume()
        self.assertIn(port, self.reactor.readers)
        port.doRead()  # type: ignore[union-attr]
        self.assertEqual(self.factory.inner.built, 1)

    def test_closeAcceptsQueuedThenRefuses(self) -> None:
        """
        L{Listener.close} accepts what the kernel queued (even while
        paused) and closes the socket at once: a later connect is refused,
        not queued.
        """
        listener = self.listener()
        assert listener.port is not None
        address = listener.port.getHost()
        for _ in range(3):
            self.connect(listener)
        listener.pause()
        listener.close()
        self.assertEqual(self.factory.inner.built, 3)
        self.assertFalse(self.factory.accepting)
        self.assertEqual(self.factory.inner.stopped, 1)
        self.assertIsNone(listener.port)
        late = socket.socket()
        self.addCleanup(late.close)
        self.assertEqual(late.connect_ex((address.host, address.port)), errno.ECONNREFUSED)

    def test_handOverUnixKeepsFile(self) -> None:
        """
        Handing a UNIX socket over closes this process's descriptor but
        leaves the file, which the successor serves.
        """
        path = os.path.join(tempfile.mkdtemp(), "s")
        listener = self.listener(f"unix:{path}")
        fileno = listener.fileno()
        self.assertIsNone(listener.handOver())
        self.assertTrue(os.path.exists(path))
        self.assertRaises(OSError, os.fstat, fileno)
        self.assertFalse(self.factory.accepting)
        os.unlink(path)
        os.rmdir(os.path.dirname(path))

    def test_closeUnixRemovesFile(self) -> None:
        """
        A final close of a UNIX socket removes its file.
        """
        path = os.path.join(tempfile.mkdtemp(), "s")
        self.addCleanup(os.rmdir, os.path.dirname(path))
        listener = self.listener(f"unix:{path}")
        self.assertTrue(os.path.exists(path))
        listener.close()
        self.assertFalse(os.path.exists(path))

    def test_handOverTcpStopsListeningNoShutdown(self) -> None:
        """
        Handing a TCP socket over stops the port without shutting the
        socket down: a copy held elsewhere (the successor's) still queues
        connections.
        """
        listener = self.listener()
        successor = os.dup(listener.fileno())
        self.addCleanup(os.close, successor)
        address = listener.port.getHost()  # type: ignore[union-attr]
        listener.handOver()
        self.reactor.advance(0)
        client = socket.socket()
        self.addCleanup(client.close)
        self.assertEqual(client.connect_ex((address.host, address.port)), 0)

    def test_pauseResumeWithoutPort(self) -> None:
        """
        Pausing, resuming or closing a listener that never listened does
        nothing but stop the factory accepting.
        """
        listener = Listener(parseEndpoint("8080"), self.factory, self.reactor)  # type: ignore[arg-type]
        listener.pause()
        listener.resume()
        self.assertFalse(listener.paused)
        listener.close()
        self.assertFalse(self.factory.accepting)
