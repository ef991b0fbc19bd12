"""
Tests for L{twisted_graceful._child}: the test plays the successor.
"""

from __future__ import annotations

import signal

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import ChildExitedEarly, ChildReadyTimeout, SuccessorDied
from twisted_graceful._child import EXIT_STATUS_WAIT, ChildProcess, ReadyMessage

READY_FD, LIFELINE_FD = 5, 6
READY_TIMEOUT = 10.0
KILL_GRACE = 2.0


class FakeProcessTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list[tuple[int, bytes]] = []

    def writeToChild(self, childFD: int, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError("data must be bytes")
        self.written.append((childFD, data))


class ChildProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.ready: list[ReadyMessage] = []
        self.failed: list[Failure] = []
        self.signals: list[tuple[int, int]] = []
        self.dead: set[int] = set()
        self.child = ChildProcess(
            self.clock, READY_FD, LIFELINE_FD, READY_TIMEOUT, self.ready.append, self.failed.append,
            kill=self.kill, killGrace=KILL_GRACE,
        )
        self.child.makeConnection(FakeProcessTransport(100))  # type: ignore[arg-type]

    def kill(self, pid: int, signum: int) -> None:
        if pid in self.dead:
            raise ProcessLookupError(pid)
        self.signals.append((pid, signum))

    def say(self, line: bytes) -> None:
        self.child.childDataReceived(READY_FD, line)

    def test_ready(self) -> None:
        """
        The ready message, possibly split across reads, fires C{onReady} with
        the serving pid and the other fields.
        """
        self.say(b'{"state": "starting", "pid": 100}\n{"state": "re')
        self.assertEqual(self.ready, [])
        self.say(b'ady", "pid": 100, "generation": 2}\n')
        self.assertEqual(self.ready, [ReadyMessage(100, {"generation": 2})])
        self.clock.advance(READY_TIMEOUT * 2)
        self.assertEqual(self.failed, [])

    def test_exitBeforeReady(self) -> None:
        """
        A successor that exits with an error before it is ready fails the
        restart with its status and the stage it reached.
        """
        self.say(b'{"state": "starting", "pid": 100}\n')
        self.child.processExited(Failure(ProcessTerminated(exitCode=1)))
        [failure] = self.failed
        failure.trap(ChildExitedEarly)
        self.assertIn("exit status 1", str(failure.value))
        self.assertIn("while starting", str(failure.value))

    def test_channelClosedThenExit(self) -> None:
        """
        When the ready channel closes first, the exit status that follows is
        part of the message.
        """
        self.child.childConnectionLost(READY_FD)
        self.assertEqual(self.failed, [])
        self.child.processExited(Failure(ProcessTerminated(signal=signal.SIGSEGV)))
        self.assertIn("killed by SIGSEGV", str(self.failed[0].value))

    def test_channelClosedNoExit(self) -> None:
        self.child.childConnectionLost(READY_FD)
        self.clock.advance(EXIT_STATUS_WAIT)
        self.assertEqual(len(self.failed), 1)

    def test_daemonizingParentExitIsFine(self) -> None:
        """
        A daemonizing twistd's first process exits 0 once its grandchild
        runs: not a failure.  The grandchild's ready message wins.
        """
        self.child.processExited(Failure(ProcessDone(0)))
        self.assertEqual(self.failed, [])
        self.say(b'{"state": "ready", "pid": 101}\n')
        self.assertEqual(self.ready[0].pid, 101)

    def test_timeoutTerminatesThenKills(self) -> None:
        """
        At the ready deadline the successor gets SIGTERM, and SIGKILL if it
        is still there after the grace.
        """
        self.say(b'{"state": "starting", "pid": 100}\n')
        self.clock.advance(READY_TIMEOUT)
        self.failed[0].trap(ChildReadyTimeout)
        self.assertEqual(self.signals, [(100, signal.SIGTERM)])
        self.clock.advance(KILL_GRACE)
        self.assertEqual(self.signals, [(100, signal.SIGTERM), (100, signal.SIGKILL)])

    def test_noKillAfterExit(self) -> None:
        self.clock.advance(READY_TIMEOUT)
        self.child.processExited(Failure(ProcessTerminated(signal=signal.SIGTERM)))
        self.clock.advance(KILL_GRACE)
        self.assertEqual(self.signals, [(100, signal.SIGTERM)])

    def test_diedAfterReady(self) -> None:
        """
        A successor that dies after it was ready is reported once more, with
        how it ended and how long it served, so the old process can roll
        back.
        """
        self.say(b'{"state": "ready", "pid": 100}\n')
        self.assertTrue(self.child.alive)
        self.clock.advance(1.5)
        self.child.processExited(Failure(ProcessTerminated(exitCode=2)))
        [failure] = self.failed
        error = failure.trap(SuccessorDied) and failure.value
        self.assertIn("exited 1.500 s after it was ready: exit status 2", str(error))
        self.assertEqual((error.pid, error.exitStatus, error.served), (100, "exit status 2", 1.5))
        self.assertFalse(self.child.alive)

    def test_lifelineClosedThenExit(self) -> None:
        """
        When the lifeline closes first, the exit status that follows is
        part of the report, which is made once.
        """
        self.say(b'{"state": "ready", "pid": 100}\n')
        self.child.childConnectionLost(LIFELINE_FD)
        self.assertEqual(self.failed, [])
        self.child.processExited(Failure(ProcessTerminated(signal=signal.SIGKILL)))
        self.clock.advance(EXIT_STATUS_WAIT)
        [failure] = self.failed
        self.assertEqual(failure.value.exitStatus, "killed by SIGKILL")  # type: ignore[attr-defined]

    def test_lifelineClosedNoExit(self) -> None:
        """
        A lifeline closed with no exit status after the wait is reported
        without one.
        """
        self.say(b'{"state": "ready", "pid": 100}\n')
        self.child.childConnectionLost(LIFELINE_FD)
        self.clock.advance(EXIT_STATUS_WAIT)
        [failure] = self.failed
        self.assertEqual(failure.value.exitStatus, "unknown exit")  # type: ignore[attr-defined]

    def test_daemonGrandchildDies(self) -> None:
        """
        A daemonized successor (its serving pid is a grandchild) that dies
        after ready is seen by its lifeline closing, at once.
        """
        self.child.processExited(Failure(ProcessDone(0)))
        self.say(b'{"state": "ready", "pid": 101}\n')
        self.assertEqual(self.failed, [])
        self.child.childConnectionLost(LIFELINE_FD)
        [failure] = self.failed
        failure.trap(SuccessorDied)
        self.assertEqual(failure.value.pid, 101)  # type: ignore[attr-defined]

    def test_cleanExitAfterReadyIsDeath(self) -> None:
        """
        A serving successor that exits 0 after ready has died all the same.
        """
        self.say(b'{"state": "ready", "pid": 100}\n')
        self.child.processExited(Failure(ProcessDone(0)))
        [failure] = self.failed
        self.assertEqual(failure.value.exitStatus, "exit status 0")  # type: ignore[attr-defined]

    def test_lifelineBeforeReadyIgnored(self) -> None:
        """
        Before ready, the ready channel tells of a death: the lifeline's
        closing alone says nothing.
        """
        self.child.childConnectionLost(LIFELINE_FD)
        self.clock.advance(EXIT_STATUS_WAIT)
        self.assertEqual(self.failed, [])

    def test_cleanExitAfterReadyIsQuiet(self) -> None:
        """
        A daemonizing twistd's first process exits 0 after its grandchild
        reported ready: nothing to say.
        """
        self.say(b'{"state": "ready", "pid": 101}\n')
        self.child.processExited(Failure(ProcessDone(0)))
        self.assertEqual(self.failed, [])

    def test_malformedIgnored(self) -> None:
        self.say(b"garbage\n{\"state\": \"ready\"}\n")
        self.assertEqual((self.ready, self.failed), ([], []))
        self.flushLoggedErrors()

    def test_handOver(self) -> None:
        self.child.handOver()
        self.assertEqual(self.child.transport.written, [(LIFELINE_FD, b'{"state": "handed-over"}\n')])  # type: ignore[union-attr]


class TurnClock(Clock):
    """
    A clock that runs, in one C{advance}, only the calls that were due when
    it began, as the reactor's timer pass does: a call made by a timer runs
    after the next pass over the descriptors.
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        due = [c for c in self.calls if c.getTime() <= self.seconds()]
        for call in sorted(due, key=lambda c: c.getTime()):
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class BlockedLoopTests(SynchronousTestCase):
    """
    A loop blocked past the ready deadline reads what the successor already
    reported before it judges the deadline.
    """

    def setUp(self) -> None:
        self.clock = TurnClock()
        self.ready: list[ReadyMessage] = []
        self.failed: list[Failure] = []
        self.signals: list[tuple[int, int]] = []
        self.child = ChildProcess(
            self.clock, READY_FD, LIFELINE_FD, READY_TIMEOUT, self.ready.append, self.failed.append,
            kill=lambda pid, signum: self.signals.append((pid, signum)), killGrace=KILL_GRACE,
        )
        self.child.makeConnection(FakeProcessTransport(100))  # type: ignore[arg-type]

    def test_readyWaitingWhenDeadlineFires(self) -> None:
        """
        The ready message that arrived while the loop was blocked wins over
        the deadline that fired first: nothing is terminated.
        """
        self.clock.advance(READY_TIMEOUT * 3)  # The loop wakes: timers first.
        self.child.childDataReceived(READY_FD, b'{"state": "ready", "pid": 100}\n')  # Then descriptors.
        self.clock.advance(0)
        self.assertEqual((len(self.ready), self.failed, self.signals), (1, [], []))

    def test_nothingWaiting(self) -> None:
        self.clock.advance(READY_TIMEOUT)
        self.assertEqual(self.failed, [])
        self.clock.advance(0)
        self.failed[0].trap(ChildReadyTimeout)
        self.assertEqual(self.signals, [(100, signal.SIGTERM)])
