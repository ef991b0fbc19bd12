"""
Tests for L{twisted_graceful._inherit}.
"""

from __future__ import annotations

import json
import os
import socket

from hypothesis import given, strategies as st
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._inherit import (
    ALL_VARIABLES,
    ENV_GENERATION,
    ENV_HANDOFF_FD,
    ENV_LIFELINE_FD,
    ENV_PARENT_PID,
    ENV_READY_FD,
    ENV_SOCKETS,
    Inheritance,
    encodeHandover,
)

PARENT = 1000


def fakeFamily(fileno: int) -> socket.AddressFamily | None:
    """
    Descriptors 3 to 9 are IPv4 listening sockets, 10 a UNIX one; anything
    else is not a listening socket.
    """
    if 3 <= fileno <= 9:
        return socket.AF_INET
    if fileno == 10:
        return socket.AF_UNIX
    return None


BOUND = {3: "tcp:8080:interface=0.0.0.0", 4: "unix:/run/a.sock", 7: "tcp:2:interface=0.0.0.0",
         8: "tcp:40123:interface=127.0.0.1"}
"""
The address each fake listening socket is bound to.
"""


def decode(
    environ: dict[str, str], pipes: dict[int, str] | None = None, parent: int = PARENT, closed: tuple[int, ...] = ()
) -> Inheritance:
    """
    Decode with fake descriptors: L{fakeFamily}, L{BOUND}, and C{pipes}
    (descriptor to direction), by default the ends of the pipes that
    C{environ} announces; this process's parent is C{parent}, and the
    pipes in C{closed} have lost their writer.
    """
    if pipes is None:
        pipes = {}
        for variable, direction in [(ENV_READY_FD, "w"), (ENV_LIFELINE_FD, "r")]:
            if environ.get(variable, "").isascii() and environ.get(variable, "").isdigit():
                pipes[int(environ[variable])] = direction
    return Inheritance.fromEnvironment(
        environ, getppid=lambda: parent, familyOf=fakeFamily, identify=BOUND.get, pipeOf=pipes.get,
        parentExited=closed.__contains__, channelOf=CHANNELS.__contains__,
    )


CHANNELS = {11, 20}
"""
The fake descriptors that are hand-off channels.
"""


class RoundTripTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        What L{encodeHandover} announces, the successor decodes: each socket
        under its identity at the descriptor the successor gets it on.
        """
        handover = encodeHandover({"tcp:8080:interface=0.0.0.0": 17, "unix:/run/a.sock": 18}, PARENT, 1)
        self.assertEqual(handover.childFDs[3], 17)
        self.assertEqual(handover.childFDs[4], 18)
        self.assertEqual((handover.childFDs[5], handover.childFDs[6]), ("r", "w"))
        environ = dict(handover.environ, OTHER="kept")
        inheritance = decode(environ)
        self.assertEqual(
            inheritance.sockets,
            {"tcp:8080:interface=0.0.0.0": (3, socket.AF_INET), "unix:/run/a.sock": (4, socket.AF_INET)},
        )
        self.assertEqual(
            (inheritance.parentPID, inheritance.readyFD, inheritance.lifelineFD, inheritance.generation),
            (PARENT, 5, 6, 2),
        )
        self.assertEqual(environ, {"OTHER": "kept"}, "the variables are consumed")

    def test_nothing(self) -> None:
        self.assertEqual(decode({}), Inheritance())


class DistrustTests(SynchronousTestCase):
    """
    Variables not meant for this process, or malformed, are ignored with a
    warning and never crash.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_parentDiedWhileStarting(self) -> None:
        """
        A process whose parent died while it started (its parent pid is now
        another's, and the lifeline has lost its writer) takes the sockets
        and the pipes, and says so.
        """
        handover = encodeHandover({"tcp:8080:interface=0.0.0.0": 17}, PARENT, 1)
        inheritance = decode(dict(handover.environ), parent=1, closed=(handover.lifelineFD,))
        self.assertEqual(inheritance.sockets, {"tcp:8080:interface=0.0.0.0": (3, socket.AF_INET)})
        self.assertEqual((inheritance.parentPID, inheritance.lifelineFD), (PARENT, handover.lifelineFD))
        self.assertEqual([(e["phase"], e["parentPID"]) for e in self.events], [("parent-gone-early", PARENT)])

    def test_otherParentLifelineOpen(self) -> None:
        """
        With another parent and a lifeline whose writer is still there, the
        variables are not meant for this process.
        """
        handover = encodeHandover({"tcp:8080:interface=0.0.0.0": 17}, PARENT, 1)
        self.assertEqual(decode(dict(handover.environ), parent=1), Inheritance())
        self.assertEqual([e["phase"] for e in self.events], ["inherit-ignored"])

    def test_writerGone(self) -> None:
        from twisted_graceful._inherit import writerGone

        r, w = os.pipe()
        self.addCleanup(os.close, r)
        os.write(w, b"data")
        self.assertFalse(writerGone(r))
        os.close(w)
        self.assertTrue(writerGone(r))
        self.assertFalse(writerGone(10**6))

    def test_otherParent(self) -> None:
        environ = encodeHandover({"tcp:1:interface=0.0.0.0": 5}, PARENT + 1, 1).environ
        self.assertEqual(decode(dict(environ)), Inheritance())
        self.assertEqual([e["phase"] for e in self.events], ["inherit-ignored"])

    def test_notAListeningSocket(self) -> None:
        environ = dict(encodeHandover({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}, PARENT, 1).environ)
        environ[ENV_SOCKETS] = json.dumps({"tcp:1:interface=0.0.0.0": 42, "tcp:2:interface=0.0.0.0": 7})
        self.assertEqual(decode(environ).sockets, {"tcp:2:interface=0.0.0.0": (7, socket.AF_INET)})

    def test_pipesNotOpen(self) -> None:
        """
        With the real parent pid but a ready or lifeline descriptor that is
        missing, garbage, closed, not a pipe or the wrong end of one,
        nothing is inherited (the process starts fresh), with a warning
        naming the variable.
        """
        handover = encodeHandover({"tcp:8080:interface=0.0.0.0": 17}, PARENT, 1)
        ready, lifeline = handover.readyFD, handover.lifelineFD
        for variable, value, pipes in [
            (ENV_READY_FD, None, {lifeline: "r"}),
            (ENV_READY_FD, "abc", {lifeline: "r"}),
            (ENV_READY_FD, "2", {lifeline: "r"}),
            (ENV_READY_FD, str(ready), {lifeline: "r"}),  # Closed.
            (ENV_READY_FD, str(ready), {ready: "r", lifeline: "r"}),  # Wrong end.
            (ENV_LIFELINE_FD, str(lifeline), {ready: "w"}),
            (ENV_READY_FD, str(lifeline), {lifeline: "r"}),  # Both name one descriptor.
            (ENV_LIFELINE_FD, "-5", {ready: "w"}),
        ]:
            before = len(self.events)
            environ = dict(handover.environ)
            if value is None:
                del environ[variable]
            else:
                environ[variable] = value
            self.assertEqual(decode(environ, pipes), Inheritance(), (variable, value))
            [event] = list(self.events)[before:]
            self.assertEqual((event["phase"], event["variable"], event["value"]), ("inherit-ignored", variable, value))
            self.assertEqual(environ, {}, "the variables are consumed")

    def test_addressDiffers(self) -> None:
        """
        A socket bound to another address than its identity names is
        refused; one bound to any port where the identity asks for port 0
        is taken.
        """
        environ = dict(encodeHandover({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}, PARENT, 1).environ)
        environ[ENV_SOCKETS] = json.dumps({
            "tcp:8080:interface=127.0.0.1": 3,  # Bound to 0.0.0.0:8080.
            "tcp:9999:interface=0.0.0.0": 7,  # Bound to port 2.
            "tcp:0:interface=127.0.0.1": 8,  # Bound to 127.0.0.1:40123.
            "unix:/run/a.sock": 4,
        })
        inheritance = decode(environ)
        self.assertEqual(sorted(inheritance.sockets), ["tcp:0:interface=127.0.0.1", "unix:/run/a.sock"])
        self.assertEqual(inheritance.refused, (3, 7))
        refused = [(e["identity"], e["bound"]) for e in self.events if e.get("phase") == "inherit-ignored"]
        self.assertEqual(refused, [("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=0.0.0.0"),
                                   ("tcp:9999:interface=0.0.0.0", "tcp:2:interface=0.0.0.0")])

    def test_garbageTable(self) -> None:
        for garbage in ["not json", "[3, 4]", "{\"a\": \"3\"}", "{\"a\": true}", "{\"a\": 1}"]:
            environ = dict(encodeHandover({"a": 1}, PARENT, 1).environ)
            environ[ENV_SOCKETS] = garbage
            self.assertEqual(decode(environ).sockets, {}, garbage)

    @given(st.dictionaries(st.sampled_from(ALL_VARIABLES), st.text(max_size=40)))
    def test_anyGarbage(self, environ: dict[str, str]) -> None:
        """
        Whatever the variables hold, decoding returns, and only descriptors
        that are listening sockets are kept.
        """
        inheritance = decode(dict(environ))
        for identity, (fileno, family) in inheritance.sockets.items():
            self.assertEqual(fakeFamily(fileno), family)
            self.assertEqual(BOUND.get(fileno), identity)
        if inheritance.parentPID is not None:
            self.assertIsNotNone(inheritance.readyFD)
            self.assertIsNotNone(inheritance.lifelineFD)


class RealSocketFamilyTests(SynchronousTestCase):
    def test_listeningFamily(self) -> None:
        """
        L{listeningFamily} tells a listening socket from a connected or
        unbound one, and from a descriptor that is not a socket.
        """
        from twisted_graceful._inherit import listeningFamily

        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        idle = socket.socket()
        self.addCleanup(listening.close)
        self.addCleanup(idle.close)
        self.assertEqual(listeningFamily(listening.fileno()), socket.AF_INET)
        self.assertIsNone(listeningFamily(idle.fileno()))
        self.assertIsNone(listeningFamily(10**6))

    def test_socketIdentity(self) -> None:
        from twisted_graceful._inherit import socketIdentity

        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        self.addCleanup(listening.close)
        self.assertEqual(socketIdentity(listening.fileno()), f"tcp:{listening.getsockname()[1]}:interface=127.0.0.1")
        self.assertIsNone(socketIdentity(10**6))

    def test_pipeDirection(self) -> None:
        from twisted_graceful._inherit import pipeDirection

        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.assertIsNone(pipeDirection(r), "made here (close-on-exec), not inherited")
        os.set_inheritable(r, True)
        os.set_inheritable(w, True)
        self.assertEqual((pipeDirection(r), pipeDirection(w)), ("r", "w"))
        os.close(w)
        self.assertIsNone(pipeDirection(w))  # Closed.
        listening = socket.socket()
        self.addCleanup(listening.close)
        self.assertIsNone(pipeDirection(listening.fileno()))


_ = (ENV_GENERATION, ENV_LIFELINE_FD, ENV_PARENT_PID, ENV_READY_FD)


class HandoffChannelTests(SynchronousTestCase):
    """
    The hand-off channel travels with the other descriptors; one that is
    not a channel is ignored with a warning.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_roundTrip(self) -> None:
        """
        The channel is passed after the pipes and announced.
        """
        handover = encodeHandover({"tcp:8080:interface=0.0.0.0": 17}, PARENT, 1, handoff=42)
        self.assertEqual((handover.handoffFD, handover.childFDs[6]), (6, 42))
        environ = dict(handover.environ)
        inheritance = decode(environ, pipes={4: "w", 5: "r"})
        self.assertIsNone(inheritance.handoffFD, "6 is not a channel here")
        handover = encodeHandover({"a": 17, "b": 18, "c": 19, "d": 20, "e": 21, "f": 22, "g": 23, "h": 24}, PARENT, 1, handoff=42)
        self.assertEqual(handover.handoffFD, 13)

    def test_announced(self) -> None:
        """
        A valid channel descriptor is decoded.
        """
        environ = dict(encodeHandover({}, PARENT, 1).environ, **{ENV_HANDOFF_FD: "11"})
        self.assertEqual(decode(environ).handoffFD, 11)
        self.assertEqual(list(self.events), [])

    def test_none(self) -> None:
        """
        Without the variable there is no channel, and no warning.
        """
        self.assertIsNone(decode(dict(encodeHandover({}, PARENT, 1).environ)).handoffFD)
        self.assertEqual(list(self.events), [])

    def test_garbage(self) -> None:
        """
        Garbage, a descriptor that is not a channel, or one of the pipes, is
        ignored with a warning; the sockets and pipes are inherited still.
        """
        for value in ("x", "-1", "2", "12", "", "3", "4"):
            handover = encodeHandover({"tcp:8080:interface=0.0.0.0": 17}, PARENT, 1)
            environ = dict(handover.environ, **{ENV_HANDOFF_FD: value})
            inheritance = decode(environ)
            self.assertIsNone(inheritance.handoffFD, value)
            self.assertEqual(inheritance.readyFD, handover.readyFD, value)
        self.assertEqual([e["phase"] for e in self.events], ["inherit-ignored"] * 7)

    def test_isHandoffChannel(self) -> None:
        from twisted_graceful._handoff import makeChannel
        from twisted_graceful._inherit import isHandoffChannel

        ours, theirs = makeChannel()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        self.assertFalse(isHandoffChannel(theirs.fileno()), "not inherited")
        theirs.set_inheritable(True)
        self.assertTrue(isHandoffChannel(theirs.fileno()))
        stream, other = socket.socketpair()
        self.addCleanup(stream.close)
        self.addCleanup(other.close)
        stream.set_inheritable(True)
        self.assertFalse(isHandoffChannel(stream.fileno()))
        self.assertFalse(isHandoffChannel(9999))
