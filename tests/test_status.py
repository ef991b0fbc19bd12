"""
Tests for L{twisted_graceful._status}, L{twisted_graceful._report} and
L{twisted_graceful._notify}.
"""

from __future__ import annotations

import errno
import json
import os

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._drain import DrainResult
from twisted_graceful._notify import Notifier
from twisted_graceful._pidfile import processStartTime
from twisted_graceful._report import Reporter
from twisted_graceful._status import StatusFile, readStatus, statusPathFor


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__({})
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *lines: str) -> None:
        self.sent.append(lines)


class StatusTests(SynchronousTestCase):
    def test_servingRecordsStartTime(self) -> None:
        """
        The serving process records its pid and its start time, which the
        control command checks before it signals the pid.
        """
        path = statusPathFor(self.mktemp())
        Reporter(StatusFile(path), RecordingNotifier()).serving(1, {}, 0.0)
        status = readStatus(path)
        assert status is not None
        self.assertEqual((status["pid"], status["startTime"]), (os.getpid(), processStartTime(os.getpid())))
        self.assertIsInstance(status["startTime"], int)

    def test_roundTrip(self) -> None:
        path = statusPathFor(self.mktemp())
        StatusFile(path).update(pid=1, state="serving")
        self.assertEqual(readStatus(path), {"pid": 1, "state": "serving"})

    def test_outOfDescriptors(self) -> None:
        """
        Out of descriptors, the write uses the one kept in reserve, which is
        taken again afterwards.
        """
        fds: list[str] = []
        written: list[bytes] = []

        def write(path: str, data: bytes) -> None:
            if "reserve" in fds:
                raise OSError(errno.EMFILE, "Too many open files")
            written.append(data)

        def openReserve() -> int:
            fds.append("reserve")
            return 99

        status = StatusFile("app.pid.status", {}, write, openReserve, lambda fd: fds.remove("reserve"))
        status.update(pid=1)  # Takes the reserve.
        self.assertEqual(fds, ["reserve"])
        status.update(state="failed")
        self.assertEqual([json.loads(d) for d in written], [{"pid": 1}, {"pid": 1, "state": "failed"}])
        self.assertEqual(fds, ["reserve"])

    def test_writeFailureLogged(self) -> None:
        """
        A status file that cannot be written is a warning, not an exception.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def write(path: str, data: bytes) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        StatusFile("app.pid.status", {}, write).update(pid=1)
        [event] = events
        self.assertEqual((event["phase"], event["error"]), ("status-not-written", "No space left on device"))

    def test_unreadable(self) -> None:
        path = self.mktemp()
        self.assertIsNone(readStatus(path))
        with open(path, "w") as f:
            f.write("[1, 2]")
        self.assertIsNone(readStatus(path))


class ReporterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = statusPathFor(self.mktemp())
        self.notifier = RecordingNotifier()
        self.reporter = Reporter(StatusFile(self.path), self.notifier)

    def keys(self) -> list[list[str]]:
        return [[line.split("=")[0] for line in sent if not line.startswith(("STATUS", "MONOTONIC"))]
                for sent in self.notifier.sent]

    def test_upgradeThenHandOver(self) -> None:
        """
        Serving, upgrading and handing over write the status and tell
        systemd READY, RELOADING, MAINPID in that order.
        """
        self.reporter.serving(1, {"8080": "0.0.0.0:8080"}, 0.0)
        attempt = self.reporter.restartRequested()
        self.reporter.upgrading(attempt)
        self.assertEqual(readStatus(self.path)["state"], "upgrading")  # type: ignore[index]
        self.reporter.handedOver(attempt, 4242)
        status = readStatus(self.path)
        assert status is not None
        self.assertEqual((status["state"], status["lastRestart"]), ("handed-over", {"attempt": 1, "outcome": "ok", "pid": 4242}))
        self.assertEqual(self.keys(), [["READY"], ["RELOADING"], ["MAINPID"]])
        self.assertIn("MAINPID=4242", self.notifier.sent[2])

    def test_onlyServerOfRecordWrites(self) -> None:
        """
        A process that never served alone (a successor stopped while it
        starts, or terminated at its ready deadline) leaves the status file
        of the serving process as it is.
        """
        StatusFile(self.path).update(pid=1, startTime=2, state="serving")
        self.reporter.draining(0.0)
        self.reporter.stopped([DrainResult("e", 1, 1, 0, 0, 0, 1.0)])
        self.assertEqual(readStatus(self.path), {"pid": 1, "startTime": 2, "state": "serving"})
        self.assertEqual(self.keys(), [], "nor does systemd hear that the service stops")

    def test_failedUpgrade(self) -> None:
        self.reporter.serving(1, {}, 0.0)
        attempt = self.reporter.restartRequested()
        self.reporter.upgrading(attempt)
        self.reporter.upgradeFailed(attempt, "exit status 1")
        status = readStatus(self.path)
        assert status is not None
        self.assertEqual((status["state"], status["lastRestart"]["outcome"]), ("serving", "failed"))
        self.assertEqual(self.keys()[-1], ["READY"])

    def test_stoppedWithFailedDrain(self) -> None:
        """
        A drain that failed makes the stop unclean, whatever the others did.
        """
        self.reporter.serving(1, {}, 0.0)
        self.reporter.draining(0.0)
        self.reporter.stopped([DrainResult("e", 1, 1, 1, 0, 0, 1.0)], failed=1)
        status = readStatus(self.path)
        assert status is not None
        self.assertFalse(status["drain"]["clean"])

    def test_stopped(self) -> None:
        self.reporter.serving(1, {}, 0.0)
        self.reporter.draining(0.0)
        self.reporter.stopped([DrainResult("e", 1, 1, 0, 1, 1, 1.0)])
        status = readStatus(self.path)
        assert status is not None
        self.assertEqual(
            status["drain"], {"completed": 0, "aborted": 1, "abortedConnections": 1, "clean": False}
        )
        self.assertEqual(self.keys(), [["READY"], ["STOPPING"], []])


class NotifierTests(SynchronousTestCase):
    def test_inertWithoutSocket(self) -> None:
        """
        Without C{NOTIFY_SOCKET} nothing is sent and nothing is logged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        notifier = Notifier({})
        self.assertFalse(notifier.enabled)
        notifier.ready("fine")
        self.assertEqual(len(events), 0)

    def test_abstractAddress(self) -> None:
        self.assertTrue(Notifier({"NOTIFY_SOCKET": "@x"}).enabled)

    def test_unreachableSocketWarnsOnce(self) -> None:
        """
        A notify socket that cannot be reached is one warning event naming
        the address and the error, however many notifications fail.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        address = os.path.join(self.mktemp(), "none")
        notifier = Notifier({"NOTIFY_SOCKET": address})
        notifier.ready("a")
        notifier.ready("b")
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["address"], address)
        self.assertIn("No such file or directory", event["error"])
