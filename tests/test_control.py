"""
Tests for L{twisted_graceful._control}: the C{twisted-graceful} command, run
end to end against a scripted server.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from pathlib import Path
from typing import Any, Callable

from attrs import evolve
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import PidFileError, _control
from twisted_graceful._control import ExitStatus, ProcessChanged, System, signalIfStarted
from twisted_graceful._pidfile import processStartTime
from twisted_graceful._status import StatusFile, readStatus

SERVER, SUCCESSOR, SERVER_START = 100, 200, 5000
SERVER_USER, OPERATOR = 1000, 1000
DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"


class FakeSystem:
    """
    The processes, users and clock the command sees.  The test plays the
    server: C{reactions[signum]} runs when the command sends C{signum}, and
    C{later} holds changes that happen as the command waits.
    """

    def __init__(self) -> None:
        self.processes: dict[int, tuple[int, int]] = {SERVER: (SERVER_START, SERVER_USER)}
        self.sent: list[tuple[int, int]] = []
        self.reactions: dict[int, Callable[[], None]] = {}
        self.later: list[tuple[float, Callable[[], None]]] = []
        self.now = 0.0
        self.euid = OPERATOR
        self.files: dict[str, dict[str, int]] = {}

    def signal(self, pid: int, signum: int, startTime: int | None) -> None:
        if pid not in self.processes:
            raise ProcessLookupError(3, "No such process")
        started, owner = self.processes[pid]
        if startTime is not None and started != startTime:
            raise ProcessChanged(3, "another process")
        if self.euid not in (0, owner):
            raise PermissionError(1, "Operation not permitted")
        self.sent.append((pid, signum))
        reaction = self.reactions.get(signum)
        if reaction is not None:
            reaction()

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for due, change in list(self.later):
            if due <= self.now:
                self.later.remove((due, change))
                change()

    def after(self, seconds: float, change: Callable[[], None]) -> None:
        self.later.append((self.now + seconds, change))

    def exit(self, pid: int) -> None:
        del self.processes[pid]

    def _stat(self, real: Callable[[str], os.stat_result], path: str) -> os.stat_result:
        fields = list(real(path))[:10]
        override = self.files.get(os.path.abspath(path), {})
        fields[0] = override.get("mode", fields[0])
        fields[4] = override.get("uid", fields[4])
        return os.stat_result(fields)

    def system(self) -> System:
        return System(
            alive=lambda pid: pid in self.processes,
            startTime=lambda pid: self.processes[pid][0] if pid in self.processes else None,
            owner=lambda pid: self.processes[pid][1] if pid in self.processes else None,
            signal=self.signal,
            euid=lambda: self.euid,
            lstat=lambda path: self._stat(os.lstat, path),
            stat=lambda path: self._stat(os.stat, path),
            sleep=self.sleep,
            monotonic=lambda: self.now,
            hasProc=lambda: True,
        )


class ControlTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.fake = FakeSystem()
        os.mkdir("run")
        self.pidfile = os.path.abspath("run/app.pid")
        self.status = StatusFile(self.pidfile + ".status")
        self.writePid(SERVER)
        self.status.update(
            pid=SERVER, startTime=SERVER_START, state="serving", generation=1, started=0.0,
            endpoints={"tcp:8080": "0.0.0.0:8080"}, restartAttempts=0, lastRestart=None,
        )
        self.out: list[str] = []
        self.err: list[str] = []

    def writePid(self, pid: int) -> None:
        with open(self.pidfile, "w") as f:
            f.write(f"{pid}\n")

    def command(self, *argv: str) -> ExitStatus:
        return _control.main([*argv, "--pidfile", self.pidfile], self.fake.system(), self.out.append,
                             self.err.append)

    def assertRefused(self, code: ExitStatus, expected: ExitStatus, message: str) -> None:
        """
        The command ended with C{expected}, one line on stderr holding
        C{message}, and no signal sent.
        """
        self.assertEqual(code, expected)
        [line] = self.err
        self.assertIn(message, line)
        self.assertEqual(self.fake.sent, [])


class StatusCommandTests(ControlTestCase):
    def test_status(self) -> None:
        """
        C{status} prints the state and signals nothing.
        """
        self.status.update(lastRestart={"attempt": 1, "outcome": "failed", "reason": "exit status 1"})
        self.assertEqual(self.command("status"), ExitStatus.OK)
        self.assertEqual(self.out[:3], [f"pid: {SERVER}", "state: serving", "generation: 1"])
        self.assertIn("endpoint: tcp:8080 at 0.0.0.0:8080", self.out)
        self.assertEqual(self.out[-1], "last restart: failed (exit status 1)")
        self.assertEqual((self.fake.sent, self.err), ([], []))

    def test_workers(self) -> None:
        """
        C{status} lists a supervisor's workers, says when they are in a
        crash loop, and gives the last rollout's outcome.
        """
        self.status.update(
            workers=[
                {"pid": 11, "generation": 2, "state": "ready", "requests": 40, "started": 0.0},
                {"pid": 12, "generation": 1, "state": "draining", "requests": 7, "started": 0.0},
            ],
            crashLoop=True,
            rollout={"generation": 3, "outcome": "failed", "reason": "Worker 13 exited"},
        )
        self.assertEqual(self.command("status"), ExitStatus.OK)
        self.assertEqual(self.out[-4:], [
            "workers: 2 (crash loop: workers keep failing)",
            "worker: pid 11 generation 2 ready requests 40",
            "worker: pid 12 generation 1 draining requests 7",
            "last rollout: failed (generation 3): Worker 13 exited",
        ])

    def test_recycling(self) -> None:
        """
        C{status} counts the workers recycled and says which one is being
        recycled, and why.
        """
        self.status.update(
            workers=[
                {"pid": 11, "generation": 1, "state": "ready", "requests": 52, "started": 0.0,
                 "recycling": "served 52 requests (limit 50)"},
                {"pid": 13, "generation": 1, "state": "starting", "requests": 0, "started": 1.0},
            ],
            recycled=3,
        )
        self.assertEqual(self.command("status"), ExitStatus.OK)
        self.assertEqual(self.out[-3:], [
            "workers: 2, 3 recycled",
            "worker: pid 11 generation 1 ready requests 52 (recycling: served 52 requests (limit 50))",
            "worker: pid 13 generation 1 starting requests 0",
        ])

    def test_upgrading(self) -> None:
        self.status.update(state="upgrading")
        self.command("status")
        self.assertIn("state: upgrading (an upgrade is in progress)", self.out)


class ReloadCommandTests(ControlTestCase):
    def successorServes(self) -> None:
        StatusFile(self.status.path).update(pid=SUCCESSOR, startTime=1, state="serving")
        self.writePid(SUCCESSOR)

    def test_succeeds(self) -> None:
        """
        C{reload} sends the restart signal, and exits 0 printing the new pid
        once the successor serves and the old process has exited.
        """
        def restart() -> None:
            self.fake.after(0.5, self.successorServes)
            self.fake.after(1.0, lambda: self.fake.exit(SERVER))

        self.fake.reactions[signal.SIGUSR2] = restart
        self.assertEqual(self.command("reload", "--timeout", "5"), ExitStatus.OK)
        self.assertEqual((self.fake.sent, self.out, self.err), ([(SERVER, signal.SIGUSR2)], [str(SUCCESSOR)], []))
        self.assertGreaterEqual(self.fake.now, 1.0)

    def test_otherSignal(self) -> None:
        self.fake.reactions[signal.SIGHUP] = lambda: (self.successorServes(), self.fake.exit(SERVER))
        self.assertEqual(self.command("reload", "--signal", "HUP"), ExitStatus.OK)
        self.assertEqual(self.fake.sent, [(SERVER, signal.SIGHUP)])

    def test_fails(self) -> None:
        """
        A failed upgrade exits 1 with the server's reason.
        """
        self.fake.reactions[signal.SIGUSR2] = lambda: self.fake.after(0.2, lambda: self.status.update(
            restartAttempts=1, lastRestart={"attempt": 1, "outcome": "failed", "reason": "exit status 3"}))
        self.assertEqual(self.command("reload"), ExitStatus.FAILED)
        self.assertEqual(self.out, [f"Reload failed: exit status 3. pid {SERVER} is still serving."])

    def test_rolledBack(self) -> None:
        """
        A reload whose successor served, then died within its probation,
        exits 1 naming the rollback, once the old process has rewritten the
        status file: while the successor's status is there, it waits.
        """
        def restart() -> None:
            self.fake.after(0.2, self.successorServes)
            self.fake.after(1.0, lambda: self.status.update(
                pid=SERVER, startTime=SERVER_START, state="serving", restartAttempts=1,
                lastRestart={"attempt": 1, "outcome": "rolled-back", "pid": SUCCESSOR,
                             "reason": f"successor pid {SUCCESSOR} died 1.5 s after it was ready (exit status 1)"}))

        self.fake.reactions[signal.SIGUSR2] = restart
        self.assertEqual(self.command("reload"), ExitStatus.FAILED)
        self.assertEqual(self.out, [
            f"Reload rolled back: successor pid {SUCCESSOR} died 1.5 s after it was ready (exit status 1). "
            f"pid {SERVER} serves again."
        ])
        self.assertGreaterEqual(self.fake.now, 1.0)

    def test_refused(self) -> None:
        self.fake.reactions[signal.SIGUSR2] = lambda: self.status.update(
            restartAttempts=1, lastRestart={"attempt": 1, "outcome": "refused", "reason": "in progress"})
        self.assertEqual(self.command("reload"), ExitStatus.FAILED)

    def test_earlierOutcomeIgnored(self) -> None:
        """
        The outcome of an earlier restart is not this one's.
        """
        self.status.update(restartAttempts=1, lastRestart={"attempt": 1, "outcome": "failed", "reason": "old"})
        self.assertEqual(self.command("reload", "--timeout", "1"), ExitStatus.TIMEOUT)

    def test_exitsWithoutSuccessor(self) -> None:
        self.fake.reactions[signal.SIGUSR2] = lambda: self.fake.exit(SERVER)
        self.assertEqual(self.command("reload"), ExitStatus.FAILED)
        self.assertEqual(self.out, [f"pid {SERVER} exited during the reload without a successor."])

    def test_timeout(self) -> None:
        """
        No outcome within C{--timeout}: exit 4, saying what the server is
        doing.
        """
        self.fake.reactions[signal.SIGUSR2] = lambda: self.status.update(state="upgrading")
        self.assertEqual(self.command("reload", "--timeout", "2"), ExitStatus.TIMEOUT)
        self.assertEqual(self.err, [f"twisted-graceful reload: No outcome within 2 s: pid {SERVER} is upgrading."])
        self.assertGreater(self.fake.now, 2)


class StopCommandTests(ControlTestCase):
    def stopsWith(self, **drain: Any) -> None:
        def stopping() -> None:
            self.status.update(state="stopped", drain=drain)
            self.fake.after(0.3, lambda: self.fake.exit(SERVER))

        self.fake.reactions[signal.SIGTERM] = stopping

    def test_clean(self) -> None:
        self.stopsWith(completed=3, aborted=0, clean=True)
        self.assertEqual(self.command("stop"), ExitStatus.OK)
        self.assertEqual(self.fake.sent, [(SERVER, signal.SIGTERM)])
        self.assertEqual(self.out, [f"pid {SERVER} stopped: the drain finished (3 requests completed)."])

    def test_cut(self) -> None:
        self.stopsWith(completed=1, aborted=2, abortedConnections=2, clean=False)
        self.assertEqual(self.command("stop"), ExitStatus.CUT)
        self.assertIn("cut at its deadline (2 requests aborted, 2 connections aborted, 1 completed)", self.out[0])

    def test_timeout(self) -> None:
        self.assertEqual(self.command("stop", "--timeout", "1"), ExitStatus.TIMEOUT)
        self.assertEqual(self.err, [f"twisted-graceful stop: No outcome within 1 s: pid {SERVER} is still draining."])


class ProofTests(ControlTestCase):
    """
    The command signals only a process it can prove is the server that
    wrote the status file, and says in one line why it refuses.
    """

    def test_startTimeDiffers(self) -> None:
        """
        Files naming a live process that started at another time than the
        server (a reused pid, or forged files) are refused for every
        command.
        """
        self.status.update(startTime=SERVER_START + 1)
        for command in ("reload", "stop", "status"):
            self.err = []
            self.assertRefused(self.command(command), ExitStatus.NO_SERVER,
                               f"pid {SERVER} (from {self.pidfile}) is not the server that wrote")

    def test_startTimeMissing(self) -> None:
        """
        A status file without a start time proves nothing.
        """
        status = readStatus(self.status.path)
        assert status is not None
        del status["startTime"]
        StatusFile(self.status.path, status).update()
        self.assertRefused(self.command("stop"), ExitStatus.NO_SERVER, "an unrecorded time")

    def test_noStatusFile(self) -> None:
        os.unlink(self.status.path)
        self.assertRefused(self.command("stop"), ExitStatus.NO_SERVER, "is not a twisted-graceful server")

    def test_stale(self) -> None:
        self.fake.exit(SERVER)
        self.assertRefused(self.command("reload"), ExitStatus.NO_SERVER, "which is not running (a stale pid file)")

    def test_missing(self) -> None:
        os.unlink(self.pidfile)
        self.assertRefused(self.command("status"), ExitStatus.NO_SERVER, "No pid file at")
        self.assertIn("is the server running?", self.err[0])

    def test_stopped(self) -> None:
        """
        After a stop, the pid file is gone and the status file says which
        server stopped: the refusal says so.
        """
        os.unlink(self.pidfile)
        self.status.update(state="stopped")
        self.assertRefused(
            self.command("status"), ExitStatus.NO_SERVER,
            f"No pid file at {self.pidfile}: the server is not running (the last one, pid {SERVER}, stopped;",
        )

    def test_garbage(self) -> None:
        with open(self.pidfile, "w") as f:
            f.write("garbage")
        self.assertRefused(self.command("stop"), ExitStatus.NO_SERVER, "holds 'garbage', not a pid")

    def test_fileOfAnotherUser(self) -> None:
        """
        A pid or status file owned by a user who is neither root, nor the
        operator, nor the server's user is refused.
        """
        for path in (self.pidfile, self.status.path):
            self.fake.files = {path: {"uid": 4321}}
            self.err = []
            self.assertRefused(self.command("stop"), ExitStatus.UNSAFE, "it is owned by uid 4321")

    def test_filesOfServerUser(self) -> None:
        """
        Root may act on files owned by the server's own user: that user
        could send the signal anyway.
        """
        self.fake.euid = 0
        self.fake.files = {self.pidfile: {"uid": SERVER_USER}, self.status.path: {"uid": SERVER_USER}}
        self.fake.reactions[signal.SIGTERM] = lambda: self.fake.exit(SERVER)
        self.assertEqual(self.command("stop"), ExitStatus.OK)

    def test_worldWritableDirectory(self) -> None:
        """
        A directory anyone can write, without the sticky bit, is refused;
        with it (as C{/tmp}) files owned by trusted users are accepted.
        """
        directory = os.path.dirname(self.pidfile)
        self.fake.files = {directory: {"mode": stat.S_IFDIR | 0o777}}
        self.assertRefused(self.command("status"), ExitStatus.UNSAFE, "writable by everyone and not sticky")
        self.fake.files = {directory: {"mode": stat.S_IFDIR | 0o1777}}
        self.err = []
        self.assertEqual(self.command("status"), ExitStatus.OK)

    def test_directoryOfAnotherUser(self) -> None:
        self.fake.files = {os.path.dirname(self.pidfile): {"uid": 4321}}
        self.assertRefused(self.command("reload"), ExitStatus.UNSAFE, "is owned by uid 4321, who could have replaced it")

    def test_symlinkElsewhere(self) -> None:
        """
        A pid file that is a link is judged where it points too.
        """
        os.mkdir("elsewhere")
        os.rename(self.pidfile, "elsewhere/app.pid")
        os.symlink(os.path.abspath("elsewhere/app.pid"), self.pidfile)
        self.fake.files = {os.path.abspath("elsewhere"): {"mode": stat.S_IFDIR | 0o777}}
        self.assertRefused(self.command("stop"), ExitStatus.UNSAFE, "elsewhere is writable by everyone")


class PermissionTests(ControlTestCase):
    def test_serverOfAnotherUser(self) -> None:
        """
        A user who may not signal the server gets one line and exit 6, not
        a traceback.
        """
        self.fake.processes[SERVER] = (SERVER_START, 0)
        self.fake.files = {self.pidfile: {"uid": 0}, self.status.path: {"uid": 0}}
        for command in ("reload", "stop"):
            self.err = []
            self.assertRefused(self.command(command), ExitStatus.PERMISSION,
                               f"Not allowed to send SIG{'USR2' if command == 'reload' else 'TERM'} to pid "
                               f"{SERVER}: it runs as another user. Run this as that user or root.")
        self.err = []
        self.assertEqual(self.command("status"), ExitStatus.OK)

    def test_unreadablePidFile(self) -> None:
        class Unreadable:
            def __init__(self, path: str) -> None:
                self.path = path

            def read(self) -> int:
                try:
                    raise PermissionError(13, "Permission denied")
                except PermissionError as e:
                    raise PidFileError(f"Cannot read the pid file {self.path}: Permission denied.") from e

        self.patch(_control, "PidFile", Unreadable)
        self.assertRefused(self.command("stop"), ExitStatus.PERMISSION, "Permission denied. Run this as the server's user")

    def test_goneBeforeSignal(self) -> None:
        """
        A server that exits, or whose pid is taken, between the check and
        the signal is not signalled.
        """
        system = evolve(self.fake.system(), signal=_raises(ProcessChanged(3, "x")))
        code = _control.main(["stop", "--pidfile", self.pidfile], system, self.out.append, self.err.append)
        self.assertRefused(code, ExitStatus.NO_SERVER, "exited before it could be sent SIGTERM and its pid now names")


def _raises(error: Exception) -> Callable[..., None]:
    def raiser(*args: object) -> None:
        raise error

    return raiser


class SignalIfStartedTests(SynchronousTestCase):
    """
    L{signalIfStarted} on this very process, with signal 0 (which checks and
    delivers nothing).
    """

    def test_sameProcess(self) -> None:
        signalIfStarted(os.getpid(), 0, processStartTime(os.getpid()))

    def test_otherStartTime(self) -> None:
        started = processStartTime(os.getpid())
        assert started is not None
        self.assertRaises(ProcessChanged, signalIfStarted, os.getpid(), 0, started + 1)

    def test_startTimeOfThisProcess(self) -> None:
        with open("/proc/self/stat") as f:
            expected = int(f.read().rsplit(")", 1)[1].split()[19])
        self.assertEqual(processStartTime(os.getpid()), expected)
        self.assertIsNone(processStartTime(2**22 + 1))


class ExitStatusTests(SynchronousTestCase):
    def test_documented(self) -> None:
        """
        The operations guide lists every exit status, and nothing else.
        """
        rows = re.findall(r"^\| (\d+) \| ", DOCS.read_text(), re.MULTILINE)
        self.assertEqual([int(r) for r in rows], [int(s) for s in ExitStatus])

    def test_help(self) -> None:
        self.assertIn("6 not allowed, 7 unsafe pid or status file", _control._parser().epilog or "")


class ArgumentTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.one_of(st.sampled_from(["reload", "stop", "status", "--pidfile", "--timeout",
                                               "--signal", "-1", "0", "abc", "USR2", "KILL9", "--help"]),
                              st.text(max_size=8)), max_size=5))
    def test_anyArguments(self, argv: list[str]) -> None:
        """
        Whatever the arguments, the command ends with exit status 2 (bad
        arguments) or, since no pid file exists, exactly 3; never a
        traceback.
        """
        argv = [a for a in argv if a not in ("--help", "-h") and not a.startswith("-h")]
        system = FakeSystem().system()
        try:
            code = _control.main(argv or ["status", "--pidfile", "none.pid"], system, lambda _: None, lambda _: None)
        except SystemExit as e:
            self.assertEqual(e.code, ExitStatus.USAGE)
        else:
            self.assertEqual(code, ExitStatus.NO_SERVER)


class PidFileErrorTests(ControlTestCase):
    """
    A server that could not write its pid file says so through the status
    file, and the command passes it on.
    """

    def test_reloadSaysPidFileFailed(self) -> None:
        reason = f"Cannot write the pid file {self.pidfile}: Read-only file system."

        def restart() -> None:
            StatusFile(self.status.path).update(pid=SUCCESSOR, startTime=1, state="serving", pidFileError=reason)
            self.fake.exit(SERVER)

        self.fake.reactions[signal.SIGUSR2] = restart
        self.assertEqual(self.command("reload"), ExitStatus.FAILED)
        self.assertEqual(self.out, [f"pid {SUCCESSOR} serves, but it could not write the pid file: {reason} "
                                    "Fix that, then restart the server."])

    def test_stalePidFileExplained(self) -> None:
        self.fake.exit(SERVER)
        self.fake.processes[SUCCESSOR] = (1, SERVER_USER)
        self.status.update(pid=SUCCESSOR, pidFileError="Read-only file system.")
        self.assertRefused(self.command("stop"), ExitStatus.NO_SERVER,
                           f"the status file says pid {SUCCESSOR} serves but could not write the pid file")

    def test_status(self) -> None:
        self.status.update(pidFileError="No space left on device.")
        self.assertEqual(self.command("status"), ExitStatus.OK)
        self.assertIn("pid file: not written: No space left on device.", self.out)
