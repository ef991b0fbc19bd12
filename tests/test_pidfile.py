"""
Tests for L{twisted_graceful._pidfile}.
"""

from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import PidFileError
from twisted_graceful._pidfile import PidFile


class PidFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.alive = {111}
        self.pidfile = PidFile(self.path, isAlive=lambda pid: pid in self.alive)

    def test_writeAtomically(self) -> None:
        self.pidfile.write(222)
        self.assertEqual(self.pidfile.read(), 222)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), [os.path.basename(self.path)])

    def test_refusesLiveOther(self) -> None:
        """
        A pid file naming another live process stops the start, with the
        way to restart it instead.
        """
        self.pidfile.write(111)
        with self.assertRaises(PidFileError) as caught:
            self.pidfile.checkStart()
        self.assertIn("kill -USR2 111", str(caught.exception))

    def test_allowsParent(self) -> None:
        """
        A successor starts although the file names its live parent; any
        other process checking the same file is refused.
        """
        self.pidfile.write(111)
        self.assertIsNone(self.pidfile.checkStart(allowed=111))
        self.assertRaises(PidFileError, self.pidfile.checkStart, allowed=112)

    def test_allowsItself(self) -> None:
        self.alive.add(os.getpid())
        self.pidfile.write(os.getpid())
        self.assertIsNone(self.pidfile.checkStart())

    def test_staleAllowed(self) -> None:
        """
        A file naming a process that is gone does not stop the start, and is
        left as it is until the new process overwrites it.
        """
        self.pidfile.write(333)
        self.assertIsNone(self.pidfile.checkStart())
        self.assertEqual(self.pidfile.read(), 333)

    def test_unreadable(self) -> None:
        os.mkdir(self.path)
        with self.assertRaises(PidFileError) as caught:
            self.pidfile.read()
        self.assertEqual(str(caught.exception), f"Cannot read the pid file {self.path}: Is a directory.")

    def test_removeOnlyOwn(self) -> None:
        """
        A process removes the file only while it names it: an old process
        never removes its successor's.
        """
        self.pidfile.write(222)
        self.assertFalse(self.pidfile.removeIfNames(111))
        self.assertTrue(os.path.exists(self.path))
        self.assertTrue(self.pidfile.removeIfNames(222))
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(self.pidfile.removeIfNames(222))

    @settings(max_examples=200)
    @given(st.one_of(st.binary(max_size=30), st.integers(-5, 2**40).map(lambda n: f" {n}\n".encode())))
    def test_garbage(self, content: bytes) -> None:
        """
        Content that is a positive decimal number (spaces around it
        allowed) reads as that pid; anything else raises L{PidFileError}
        naming the file and what it holds.  Starting is refused only by the
        live pid 111, never by garbage.
        """
        with open(self.path, "wb") as f:
            f.write(content)
        text = content[:64].decode("ascii", "replace").strip()
        valid = text.isascii() and text.isdigit() and int(text) > 0
        if valid:
            self.assertEqual(self.pidfile.read(), int(text))
        else:
            with self.assertRaises(PidFileError) as caught:
                self.pidfile.read()
            self.assertIn(f"The pid file {self.path} holds ", str(caught.exception))
            self.assertIn("not a pid. Remove it if no server is running.", str(caught.exception))
        if valid and int(text) == 111:
            self.assertRaises(PidFileError, self.pidfile.checkStart)
        else:
            self.assertIsNone(self.pidfile.checkStart())


class UnwritablePidFileTests(SynchronousTestCase):
    """
    A serving process that cannot write its pid file says so in an error
    event and in the status file, and serves on, restartable.
    """

    def test_servesOn(self) -> None:
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import LogLevel, globalLogPublisher

        from twisted_graceful import GracefulService
        from twisted_graceful._status import readStatus

        from .test_service import Harness

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        os.mkdir("app.pid")  # os.replace cannot put a file there.
        h = Harness(self)
        h.service = GracefulService(reactor=h.reactor, handleSignals=False, environ={},
                                    pidFile=os.path.abspath("app.pid"))
        h.addEndpoint("8080")
        h.service.startService()
        h.service._reactorRunning()
        [event] = [e for e in events if e.get("phase") == "pidfile-failed"]
        self.assertEqual(event["log_level"], LogLevel.error)
        self.assertIn("Cannot write the pid file", event["error"])
        status = readStatus("app.pid.status")
        assert status is not None
        self.assertEqual((status["pid"], status["state"]), (os.getpid(), "serving"))
        self.assertEqual(status["pidFileError"], event["error"])
        self.assertFalse(h.service.stopping)
        restarting = h.service.restart()
        self.assertNoResult(restarting)  # Accepted: this process is ready to restart.
        h.reactor.advance(0)
        self.failureResultOf(restarting)
