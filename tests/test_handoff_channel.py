"""
Tests for L{twisted_graceful._handoff}: the hand-off channel, over a real
UNIX socket pair with C{SCM_RIGHTS}, driven by a memory reactor.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._handoff import (
    ANSWER_TIMEOUT,
    WINDOW,
    HandoffReceiver,
    HandoffSender,
    isConnectedStream,
    makeChannel,
    receive,
    send,
)

IDENTITY = "tcp:8080:interface=127.0.0.1"


class Connection:
    """
    A connected stream socket pair: C{server} is offered, C{client} is the
    peer that checks which process serves it.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.server, self.client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.client.settimeout(5)
        test.addCleanup(self.server.close)
        test.addCleanup(self.client.close)


class Channel:
    """
    Both ends of a hand-off channel on one memory reactor; the receiver's
    C{adopt} records what it is given and answers from C{self.answer}.
    """

    def __init__(self, test: SynchronousTestCase, limit: int = 100) -> None:
        self.test = test
        self.clock = MemoryReactorClock()
        ours, theirs = makeChannel()
        self.sender = HandoffSender(self.clock, ours)
        self.adopted: list[tuple[str, socket.AddressFamily, int]] = []
        self.answer: str | None = None
        self.receiver = HandoffReceiver(self.clock, theirs, self.adopt, limit, parentPID=100)
        self.taken: list[int] = []
        self.refused: list[tuple[int, str]] = []
        test.addCleanup(self.sender.close)
        test.addCleanup(self.receiver.close)

    def adopt(self, identity: str, family: socket.AddressFamily, fileno: int) -> str | None:
        self.adopted.append((identity, family, fileno))
        if self.answer is None:
            # Serve the client from this descriptor, as the successor would.
            os.write(fileno, b"from the successor")
        return self.answer

    def start(self) -> None:
        self.sender.start()
        self.receiver.start()
        self.sender.doRead()

    def offer(self, connection: Connection, n: int = 0, identity: str = IDENTITY) -> bool:
        return self.sender.offer(
            identity,
            socket.AF_UNIX,
            connection.server.fileno(),
            lambda: self.taken.append(n),
            lambda why: self.refused.append((n, why)),
        )

    def exchange(self) -> None:
        self.receiver.doRead()
        self.sender.doRead()
        self.clock.advance(0)


class ChannelTests(SynchronousTestCase):
    """
    L{HandoffSender} and L{HandoffReceiver} pass a connection's descriptor
    and say whether it was taken.
    """

    def test_taken(self) -> None:
        """
        A connection offered reaches the successor as a descriptor of the
        same socket, for the endpoint named; the old process hears it was
        taken.
        """
        c = Channel(self)
        c.start()
        conn = Connection(self)
        self.assertTrue(c.offer(conn))
        c.exchange()
        [(identity, family, _)] = c.adopted
        self.assertEqual((identity, family), (IDENTITY, socket.AF_UNIX))
        self.assertEqual(conn.client.recv(100), b"from the successor")
        self.assertEqual(c.taken, [0])
        self.assertEqual((c.sender.moved, c.sender.refused, c.receiver.moved), (1, 0, 1))

    def test_receivedDescriptorClosed(self) -> None:
        """
        The successor closes the descriptor it received once adopted (the
        reactor holds its own copy).
        """
        c = Channel(self)
        c.start()
        c.offer(Connection(self))
        c.exchange()
        [(_, _, fileno)] = c.adopted
        self.assertRaises(OSError, os.fstat, fileno)

    def test_refused(self) -> None:
        """
        A connection the successor refuses is refused with its reason.
        """
        c = Channel(self)
        c.start()
        c.answer = "endpoint not served"
        c.offer(Connection(self))
        c.exchange()
        self.assertEqual(c.refused, [(0, "endpoint not served")])
        self.assertEqual(c.receiver.refused, {"endpoint not served": 1})

    def test_waitsForHello(self) -> None:
        """
        Nothing is sent before the successor says it reads the channel; then
        what was offered goes.
        """
        c = Channel(self)
        c.sender.start()
        c.offer(Connection(self))
        c.receiver._sock.setblocking(False)
        self.assertIsNone(receive(c.receiver._sock))
        c.receiver.start()
        c.sender.doRead()
        c.exchange()
        self.assertEqual(c.taken, [0])

    def test_silentSuccessor(self) -> None:
        """
        A successor that never says hello (a release without hand-off) gets
        nothing: after the answer timeout what was offered is refused, and
        the channel takes no more offers.
        """
        c = Channel(self)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c.sender.start()
        c.offer(Connection(self))
        c.clock.advance(ANSWER_TIMEOUT)
        c.clock.advance(0)
        self.assertEqual(len(c.refused), 1)
        self.assertFalse(c.sender.open)
        self.assertFalse(c.offer(Connection(self)))
        self.assertEqual([e["count"] for e in events if e.get("phase") == "handoff-broken"], [1])

    def test_successorGone(self) -> None:
        """
        When the successor's end closes, every connection offered and not
        answered is refused: the old process keeps it.
        """
        c = Channel(self)
        c.start()
        c.offer(Connection(self), 0)
        c.offer(Connection(self), 1)
        c.receiver.close()
        c.sender.doRead()
        c.clock.advance(0)
        self.assertEqual(sorted(n for n, _ in c.refused), [0, 1])
        self.assertEqual(c.taken, [])
        self.assertEqual(c.sender.refused, 2)

    def test_window(self) -> None:
        """
        At most L{WINDOW} connections are in flight; the others go as answers
        come back.
        """
        c = Channel(self)
        c.start()
        conns = [Connection(self) for _ in range(WINDOW + 3)]
        for n, conn in enumerate(conns):
            c.offer(conn, n)
        self.assertEqual(len(c.sender._inFlight), WINDOW)
        c.exchange()
        c.exchange()
        self.assertEqual(sorted(c.taken), list(range(WINDOW + 3)))

    def test_limit(self) -> None:
        """
        The successor's limit is told in its hello: beyond it, the old
        process offers no more and keeps the rest.
        """
        c = Channel(self, limit=1)
        c.start()
        self.assertTrue(c.offer(Connection(self), 0))
        self.assertFalse(c.sender.open)
        self.assertFalse(c.offer(Connection(self), 1))
        c.exchange()
        self.assertEqual(c.taken, [0])

    def test_limitEnforced(self) -> None:
        """
        The successor refuses connections beyond its limit, whatever the
        other end sends.
        """
        c = Channel(self, limit=1)
        c.receiver.start()
        other = c.sender._sock
        for seq in (1, 2):
            send(other, {"seq": seq, "identity": IDENTITY, "family": socket.AF_UNIX}, (Connection(self).server.fileno(),))
        c.receiver.doRead()
        answers = [receive(other) for _ in range(3)]
        self.assertEqual(answers[0], ({"hello": 1, "limit": 1}, []))
        self.assertEqual([a[0]["taken"] for a in answers[1:] if a and a[0]], [True, False])
        self.assertEqual(c.receiver.refused, {"limit": 1})

    def test_garbage(self) -> None:
        """
        Malformed messages are refused (answered when they carry a sequence
        number), their descriptors closed, and the channel goes on.
        """
        c = Channel(self)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        c.receiver.start()
        other = c.sender._sock
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        good = {"identity": IDENTITY, "family": socket.AF_UNIX}
        other.send(b"not json")
        other.send(b"[1]")
        send(other, {"seq": "x", **good}, (Connection(self).server.fileno(),))
        send(other, {"seq": 1, "identity": 5, "family": socket.AF_UNIX}, (Connection(self).server.fileno(),))
        send(other, {"seq": 2, "identity": IDENTITY, "family": 99}, (Connection(self).server.fileno(),))
        send(other, {"seq": 3, **good})
        send(other, {"seq": 4, **good}, (Connection(self).server.fileno(), Connection(self).server.fileno()))
        send(other, {"seq": 5, **good}, (r,))
        send(other, {"seq": 6, **good}, (Connection(self).server.fileno(),))
        c.receiver.doRead()
        receive(other)  # hello
        answers: list[Any] = []
        while (answer := receive(other)) is not None:
            answers.append(answer[0])
        self.assertEqual([a["seq"] for a in answers], [1, 2, 3, 4, 5, 6])
        self.assertEqual([a["taken"] for a in answers], [False] * 5 + [True])
        self.assertEqual(c.receiver.refused, {"malformed": 7, "not a connected socket": 1})
        self.assertEqual(c.receiver.moved, 1)
        c.sender.close()
        c.receiver.doRead()
        [done] = [e for e in events if e.get("phase") == "handoff-received"]
        self.assertEqual((done["moved"], done["refusedCount"], done["parentPID"]), (1, 8, 100))

    def test_adoptFails(self) -> None:
        """
        An exception while adopting refuses that connection and is logged.
        """
        c = Channel(self)
        c.start()

        def explode(identity: str, family: socket.AddressFamily, fileno: int) -> str | None:
            raise RuntimeError("boom")

        c.receiver._adopt = explode
        c.offer(Connection(self))
        c.exchange()
        self.assertEqual(c.refused, [(0, "error")])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class WireTests(SynchronousTestCase):
    """
    The wire format's helpers.
    """

    def test_endOfFile(self) -> None:
        ours, theirs = makeChannel()
        self.addCleanup(ours.close)
        theirs.close()
        self.assertRaises(EOFError, receive, ours)

    def test_message(self) -> None:
        ours, theirs = makeChannel()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        self.assertTrue(send(theirs, {"a": 1}))
        self.assertEqual(receive(ours), ({"a": 1}, []))
        self.assertIsNone(receive(ours))
        self.assertEqual(json.loads(b'{"a":1}'), {"a": 1})

    def test_notInheritable(self) -> None:
        """
        Neither end leaks into other children: the successor's end is passed
        through C{childFDs} only.
        """
        ours, theirs = makeChannel()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        self.assertFalse(ours.get_inheritable() or theirs.get_inheritable())
        self.assertEqual(theirs.type, socket.SOCK_SEQPACKET)

    def test_isConnectedStream(self) -> None:
        conn = Connection(self)
        self.assertTrue(isConnectedStream(conn.server.fileno(), socket.AF_UNIX))
        self.assertFalse(isConnectedStream(conn.server.fileno(), socket.AF_INET))
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        self.assertFalse(isConnectedStream(listening.fileno(), socket.AF_UNIX))
        self.assertFalse(isConnectedStream(9999, socket.AF_UNIX))
