"""
Tests for how a restart carries kept-alive connections
(L{twisted_graceful._succession.Succession}): the old process gives its
successor a hand-off channel and drains through it; the successor takes
connections on that channel once ready, for the endpoints it serves.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import GracefulService
from twisted_graceful import _succession
from twisted_graceful._errors import SuccessorDied
from twisted_graceful._handoff import makeChannel, receive, send
from twisted_graceful._inherit import Inheritance
from twisted_graceful._movable import EndpointMover

from ._fakes import SpawningReactor, patchStatic
from .test_service import PROBATION, SERVING_PID, SUCCESSOR_ARGV, Harness

PARENT_PID = 4242


def connectedPair() -> tuple[socket.socket, socket.socket]:
    """
    A real TCP connection on 127.0.0.1: C{(client, server)} ends.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server


class Channels:
    """
    Replaces L{makeChannel} in the old process, keeping the successor's end
    for the test to play the successor on.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.successorEnds: list[socket.socket] = []
        test.patch(_succession, "makeChannel", self)
        test.addCleanup(lambda: [s.close() for s in self.successorEnds])

    def __call__(self) -> tuple[socket.socket, socket.socket]:
        ours, theirs = makeChannel()
        successorEnd = socket.socket(fileno=os.dup(theirs.fileno()))
        successorEnd.settimeout(5)
        self.successorEnds.append(successorEnd)
        return ours, theirs


class OldProcessTests(SynchronousTestCase):
    """
    A restart gives the successor a hand-off channel, drains its plain
    endpoints through it, and closes it once the drain is over.
    """

    def setUp(self) -> None:
        self.reactor = SpawningReactor()
        self.h = Harness(self, self.reactor)
        patchStatic(self, GracefulService, "_kill", lambda pid, signum: None)
        self.channels = Channels(self)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, **kw: Any) -> None:
        self.h.service = GracefulService(
            reactor=self.reactor, handleSignals=False, environ={}, argv=SUCCESSOR_ARGV, probation=PROBATION, **kw
        )
        self.endpoint = self.h.addEndpoint("tcp:8080:interface=127.0.0.1")
        self.reactor.running = True
        self.h.service.startService()

    def handOver(self) -> Any:
        d = self.h.service.restart()
        [process] = self.reactor.processes[-1:]
        readyFD = int(process.env["TWISTED_GRACEFUL_READY_FD"])
        process.fromChild(readyFD, json.dumps({"state": "ready", "pid": SERVING_PID}).encode() + b"\n")
        return d, process

    def test_channelGiven(self) -> None:
        """
        The successor gets its end of the channel after its pipes, announced
        in C{TWISTED_GRACEFUL_HANDOFF_FD}; this process listens on its own
        end, and does not keep the successor's.
        """
        self.start()
        self.h.service.restart()
        [process] = self.reactor.processes
        self.assertEqual(process.env["TWISTED_GRACEFUL_HANDOFF_FD"], "6")
        given = process.childFDs[6]
        self.assertIsInstance(given, int)
        with self.assertRaises(OSError):
            os.fstat(given)  # type: ignore[arg-type]
        [sender] = [r for r in self.reactor.readers if r.logPrefix() == "twisted_graceful.handoff"]
        self.assertTrue(sender.open)

    def test_drainMovesThroughChannel(self) -> None:
        """
        At the hand-over, the plain endpoint drains with a mover for its
        identity; once the drain is over, the channel is closed (the
        successor reads its end of file) and the counts are logged.
        """
        self.start()
        client = self.h.connect(self.endpoint)
        self.h.send(client, b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        self.handOver()
        mover = self.endpoint.factory._mover
        self.assertIsInstance(mover, EndpointMover)
        assert isinstance(mover, EndpointMover)
        self.assertEqual((mover.identity, mover.family), (self.endpoint.identity, socket.AF_INET))
        [successorEnd] = self.channels.successorEnds
        successorEnd.setblocking(False)
        self.assertIsNone(receive(successorEnd))  # Open, nothing sent.
        successorEnd.settimeout(5)
        self.h.resources[0].finishAll()
        self.h.flush()
        self.reactor.advance(2)  # The idle grace: this fake connection cannot move.
        self.h.flush()
        with self.assertRaises(EOFError):
            receive(successorEnd)
        [sent] = [e for e in self.events if e.get("phase") == "handoff-sent"]
        self.assertEqual((sent["moved"], sent["refused"]), (0, 0))

    def test_off(self) -> None:
        """
        With C{connectionHandoff=False}, no channel is made and the drain
        closes connections as a shutdown does.
        """
        self.start(connectionHandoff=False)
        self.handOver()
        [process] = self.reactor.processes
        self.assertNotIn("TWISTED_GRACEFUL_HANDOFF_FD", process.env)
        self.assertEqual(self.channels.successorEnds, [])
        self.assertIsNone(self.endpoint.factory._mover)

    def test_rollbackClosesChannel(self) -> None:
        """
        A rollback closes the channel: the connections still offered are
        kept here.
        """
        from twisted.internet.error import ProcessTerminated
        from twisted.python.failure import Failure

        self.start()
        client = self.h.connect(self.endpoint)
        self.h.send(client, b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        d, process = self.handOver()
        process.exit(Failure(ProcessTerminated(exitCode=1)))
        self.failureResultOf(d, SuccessorDied)
        [successorEnd] = self.channels.successorEnds
        with self.assertRaises(EOFError):
            receive(successorEnd)
        self.assertIsNone(self.endpoint.factory._mover)

    def test_noDescriptors(self) -> None:
        """
        When the channel cannot be made (out of descriptors), the successor
        starts without one, and the warning says connections will be
        closed.
        """
        import errno

        def fail() -> Any:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(_succession, "makeChannel", fail)
        self.start()
        self.h.service.restart()
        [process] = self.reactor.processes
        self.assertNotIn("TWISTED_GRACEFUL_HANDOFF_FD", process.env)
        [warning] = [e for e in self.events if e.get("phase") == "handoff-unavailable"]
        self.assertIn("Too many open files", str(warning["error"]))

    def test_keptChannel(self) -> None:
        """
        A service that keeps the channel (a supervisor, whose workers drain
        after its own endpoints) closes it only when told to.
        """

        class Keeping(GracefulService):
            def _successionOptions(self) -> dict[str, Any]:
                return {"keepChannel": True}

        self.h.service = Keeping(
            reactor=self.reactor, handleSignals=False, environ={}, argv=SUCCESSOR_ARGV, probation=PROBATION
        )
        self.endpoint = self.h.addEndpoint("tcp:8080:interface=127.0.0.1")
        self.reactor.running = True
        self.h.service.startService()
        self.handOver()
        [successorEnd] = self.channels.successorEnds
        successorEnd.setblocking(False)
        self.assertIsNone(receive(successorEnd))  # The drain is over; still open.
        succession = self.h.service._succession
        assert succession is not None
        self.assertIsNotNone(succession.channel)
        succession.closeChannel()
        successorEnd.settimeout(5)
        with self.assertRaises(EOFError):
            receive(successorEnd)

    def test_badLimit(self) -> None:
        """
        A negative limit is refused, naming the argument.
        """
        with self.assertRaises(ValueError) as e:
            GracefulService(handoffLimit=-1)
        self.assertIn("handoffLimit", str(e.exception))


class SuccessorTests(SynchronousTestCase):
    """
    A successor given a hand-off channel takes connections on it once it is
    ready, for its plain endpoints, within its limit.
    """

    def setUp(self) -> None:
        self.reactor = SpawningReactor()
        self.h = Harness(self, self.reactor)
        self.parentEnd, theirs = makeChannel()
        self.addCleanup(self.parentEnd.close)
        self.parentEnd.setblocking(True)
        self.parentEnd.settimeout(5)
        # The successor's end, as the launcher passes it: inheritable.
        theirs.set_inheritable(True)
        self.handoffFD = theirs.detach()
        inheritance = Inheritance(parentPID=PARENT_PID, generation=2, handoffFD=self.handoffFD)
        self.patch(Inheritance, "fromEnvironment", classmethod(lambda cls, environ: inheritance))
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, *descriptions: str, **kw: Any) -> None:
        self.h.service = GracefulService(reactor=self.reactor, handleSignals=False, environ={}, **kw)
        self.endpoints = [self.h.addEndpoint(d) for d in descriptions]
        self.reactor.running = True
        self.h.service.startService()

    def receiver(self) -> Any:
        [receiver] = [r for r in self.reactor.readers if r.logPrefix() == "twisted_graceful.handoff"]
        return receiver

    def offer(self, seq: int, identity: str, family: int = socket.AF_INET) -> dict[str, Any]:
        """
        Offer a real connection as the old process does; return the answer.
        """
        client, server = connectedPair()
        self.addCleanup(client.close)
        with server:
            send(self.parentEnd, {"seq": seq, "identity": identity, "family": family}, (server.fileno(),))
        self.receiver().doRead()
        received = receive(self.parentEnd)
        assert received is not None
        message, _ = received
        assert message is not None
        return message

    def test_helloOnceReady(self) -> None:
        """
        Once ready, the successor says hello with its limit, and its end of
        the channel is not inherited by its own successor.
        """
        self.start("tcp:8080:interface=127.0.0.1", handoffLimit=7)
        received = receive(self.parentEnd)
        assert received is not None
        self.assertEqual(received[0], {"hello": 1, "limit": 7})
        self.assertFalse(os.get_inheritable(self.handoffFD))

    def test_takenIntoEndpoint(self) -> None:
        """
        A connection of an endpoint this process serves is adopted into
        that endpoint's factory, and the answer says taken.
        """
        self.start("tcp:8080:interface=127.0.0.1")
        receive(self.parentEnd)
        answer = self.offer(1, self.endpoints[0].identity)
        self.assertEqual(answer, {"seq": 1, "taken": True, "reason": ""})
        [(fileno, family, factory)] = self.reactor.adoptedStreamConnections
        self.assertEqual((family, factory), (socket.AF_INET, self.endpoints[0].factory))

    def test_refusedElsewhere(self) -> None:
        """
        A connection for an endpoint not served here is refused with the
        reason; nothing is adopted, and the counts are logged when the
        channel closes.
        """
        self.start("tcp:8080:interface=127.0.0.1")
        receive(self.parentEnd)
        self.assertEqual(self.offer(1, "tcp:9999:interface=127.0.0.1")["reason"], "not served here")
        self.assertEqual(self.reactor.adoptedStreamConnections, [])
        self.parentEnd.close()
        self.receiver().doRead()
        [log] = [e for e in self.events if e.get("phase") == "handoff-received"]
        self.assertEqual(
            (log["moved"], log["refused"], log["parentPID"]), (0, {"not served here": 1}, PARENT_PID)
        )

    def test_limit(self) -> None:
        """
        Past its limit, the successor refuses connections.
        """
        self.start("tcp:8080:interface=127.0.0.1", handoffLimit=1)
        receive(self.parentEnd)
        identity = self.endpoints[0].identity
        self.assertTrue(self.offer(1, identity)["taken"])
        self.assertEqual(self.offer(2, identity)["reason"], "limit")

    def test_stoppingRefuses(self) -> None:
        """
        Once this process stops, it stops reading the channel: the old
        process sees its end of file and keeps its connections.
        """
        self.start("tcp:8080:interface=127.0.0.1")
        receive(self.parentEnd)
        self.h.service.stopService()
        with self.assertRaises(EOFError):
            receive(self.parentEnd)

    def test_off(self) -> None:
        """
        With C{connectionHandoff=False}, the successor closes the channel
        without a hello: the old process keeps its connections.
        """
        self.start("tcp:8080:interface=127.0.0.1", connectionHandoff=False)
        with self.assertRaises(EOFError):
            receive(self.parentEnd)
