"""
Tests for L{twisted_graceful._broker}: the supervisor passes a draining
worker's connections on to the newest ready worker, over real channels.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._broker import Broker, WorkerChannels
from twisted_graceful._handoff import receive, send

from .test_succession_handoff import connectedPair

IDENTITY = "tcp:8080:interface=127.0.0.1"


class Worker:
    """
    Plays one worker on its ends of its channels.
    """

    def __init__(self, test: SynchronousTestCase, broker: Broker) -> None:
        self.channels = WorkerChannels.make()
        self.up, self.down = self.channels.workerUp.dup(), self.channels.workerDown.dup()
        for end in (self.up, self.down):
            end.settimeout(5)
            test.addCleanup(end.close)
        self.channels.spawned()
        broker.add(self, self.channels)

    def ready(self, limit: int = 10) -> None:
        send(self.down, {"hello": 1, "limit": limit})

    def heard(self, end: socket.socket) -> tuple[Any, list[int]] | None:
        end.setblocking(False)
        try:
            return receive(end)
        finally:
            end.settimeout(5)


class BrokerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.broker = Broker(self.reactor)
        self.old = Worker(self, self.broker)
        self.new = Worker(self, self.broker)

    def offer(self) -> socket.socket:
        """
        The old worker offers a real connection; return the client's end.
        """
        client, server = connectedPair()
        self.addCleanup(client.close)
        with server:
            send(self.old.up, {"seq": 1, "identity": IDENTITY, "family": socket.AF_INET}, (server.fileno(),))
        self.broker._workers[self.old].receiver.doRead()  # type: ignore[union-attr]
        return client

    def test_passedOn(self) -> None:
        """
        Draining a worker while another is ready says hello to it; a
        connection it offers reaches the ready worker, and the ready
        worker's answer reaches the old one.
        """
        self.new.ready()
        self.broker.draining(self.old, moveConnections=True)
        hello = self.old.heard(self.old.up)
        assert hello is not None
        self.assertEqual(hello[0]["hello"], 1)
        client = self.offer()
        received = receive(self.new.down)
        assert received is not None
        message, fds = received
        self.assertEqual((message["identity"], message["family"], len(fds)), (IDENTITY, socket.AF_INET, 1))
        with socket.socket(fileno=fds[0]) as moved:
            self.assertEqual(moved.getpeername(), client.getsockname())
        send(self.new.down, {"seq": message["seq"], "taken": True})
        self.broker._workers[self.new].sender.doRead()
        answer = receive(self.old.up)
        assert answer is not None
        self.assertEqual(answer[0], {"seq": 1, "taken": True, "reason": ""})

    def test_refusalRelayed(self) -> None:
        """
        The ready worker's refusal reaches the old worker with its reason.
        """
        self.new.ready()
        self.broker.draining(self.old, moveConnections=True)
        self.old.heard(self.old.up)
        self.offer()
        received = receive(self.new.down)
        assert received is not None
        send(self.new.down, {"seq": received[0]["seq"], "taken": False, "reason": "limit"})
        self.broker._workers[self.new].sender.doRead()
        answer = receive(self.old.up)
        assert answer is not None
        self.assertEqual(answer[0], {"seq": 1, "taken": False, "reason": "limit"})

    def test_noReadyWorker(self) -> None:
        """
        With no other worker ready, the draining worker hears no hello: it
        drains as a single server does.
        """
        self.broker.draining(self.old, moveConnections=True)
        self.assertIsNone(self.old.heard(self.old.up))

    def test_notMoving(self) -> None:
        """
        A drain that must not move connections (the supervisor stops) says
        no hello, even with a worker ready.
        """
        self.new.ready()
        self.broker.draining(self.old, moveConnections=False)
        self.assertIsNone(self.old.heard(self.old.up))

    def test_drainingIsNoTarget(self) -> None:
        """
        A worker that drains takes no connection.
        """
        self.new.ready()
        self.broker.draining(self.new, moveConnections=False)
        self.broker.draining(self.old, moveConnections=True)
        self.assertIsNone(self.old.heard(self.old.up))

    def test_upstreamFirst(self) -> None:
        """
        With an upstream channel that takes connections (the successor
        supervisor's), a draining worker's connections go there, even with
        no worker ready here.
        """
        from twisted_graceful._handoff import HandoffSender, makeChannel

        ours, theirs = makeChannel()
        self.addCleanup(theirs.close)
        theirs.settimeout(5)
        upstream = HandoffSender(self.reactor, ours)
        upstream.start()
        self.addCleanup(upstream.close)
        send(theirs, {"hello": 1, "limit": 5})
        upstream.hear()
        self.broker.upstream = upstream
        self.broker.draining(self.old, moveConnections=True)
        self.assertIsNotNone(self.old.heard(self.old.up))
        self.offer()
        received = receive(theirs)
        assert received is not None
        self.assertEqual(received[0]["identity"], IDENTITY)
        for fd in received[1]:
            socket.socket(fileno=fd).close()
        self.assertIsNone(self.new.heard(self.new.down))

    def test_removeCloses(self) -> None:
        """
        Once a worker has exited, its channels are closed: a worker still
        holding its ends reads their end of file.
        """
        self.broker.remove(self.old)
        with self.assertRaises(EOFError):
            receive(self.old.up)
        with self.assertRaises(EOFError):
            receive(self.old.down)


class WorkerChannelsVariableTests(SynchronousTestCase):
    """
    A worker takes its channels from its supervisor's variable only when
    they are two inherited hand-off channels.
    """

    def test_valid(self) -> None:
        from twisted_graceful._workers import _channels

        self.assertEqual(_channels([7, 8], {7, 8}.__contains__), (7, 8))
        self.assertIsNone(_channels(None, {7, 8}.__contains__))

    def test_garbageIgnored(self) -> None:
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from twisted_graceful._workers import _channels

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        for value in ([7], [7, 7], [7, 9], ["7", 8], [True, 8], [1, 2], 7, {"up": 7}):
            self.assertIsNone(_channels(value, {7, 8}.__contains__), value)
        self.assertEqual(len([e for e in events if e.get("phase") == "inherit-ignored"]), 8)
