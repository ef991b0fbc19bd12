"""
Tests for L{twisted_graceful._inherit}.
"""

from __future__ import annotations

import json
import socket

from hypothesis import given, strategies as st
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._inherit import (
    ALL_VARIABLES,
    ENV_GENERATION,
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


def decode(environ: dict[str, str]) -> Inheritance:
    return Inheritance.fromEnvironment(environ, getppid=lambda: PARENT, familyOf=fakeFamily)


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

    def test_otherParent(self) -> None:
        environ = encodeHandover({"tcp:1:interface=0.0.0.0": 5}, PARENT + 1, 1).environ
        self.assertEqual(decode(dict(environ)), Inheritance())
        self.assertEqual([e["phase"] for e in self.events], ["inherit-ignored"])

    def test_notAListeningSocket(self) -> None:
        environ = dict(encodeHandover({}, PARENT, 1).environ)
        environ[ENV_SOCKETS] = json.dumps({"tcp:1:interface=0.0.0.0": 42, "tcp:2:interface=0.0.0.0": 3})
        self.assertEqual(decode(environ).sockets, {"tcp:2:interface=0.0.0.0": (3, socket.AF_INET)})

    def test_garbageTable(self) -> None:
        for garbage in ["not json", "[3, 4]", "{\"a\": \"3\"}", "{\"a\": true}", "{\"a\": 1}"]:
            environ = dict(encodeHandover({}, PARENT, 1).environ)
            environ[ENV_SOCKETS] = garbage
            self.assertEqual(decode(environ).sockets, {}, garbage)

    @given(st.dictionaries(st.sampled_from(ALL_VARIABLES), st.text(max_size=40)))
    def test_anyGarbage(self, environ: dict[str, str]) -> None:
        """
        Whatever the variables hold, decoding returns, and only descriptors
        that are listening sockets are kept.
        """
        inheritance = decode(dict(environ))
        for fileno, family in inheritance.sockets.values():
            self.assertEqual(fakeFamily(fileno), family)
        for fd in (inheritance.readyFD, inheritance.lifelineFD):
            self.assertTrue(fd is None or fd >= 3)


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


_ = (ENV_GENERATION, ENV_LIFELINE_FD, ENV_PARENT_PID, ENV_READY_FD)
