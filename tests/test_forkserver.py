"""
Tests for L{twisted_graceful._forkserver}: the fork server's loop, run for
real in a process of its own; the supervisor's side against a fork server
the test plays.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._forkserver import ForkServer, ForkServerError, cannotFork
from twisted_graceful._supervisor import SupervisorService

from ._fakes import SpawningReactor

DEADLINE = 10.0

# The fork server's loop on the descriptor its argument names; each child
# reports on descriptor 5 what it was given, echoes descriptor 7 on 6 (and
# more from a thread still running when the child's main code ends), and
# exits with the status $EXIT asks for.
SERVER = textwrap.dedent(
    """
    import json, os, signal, socket, sys, threading, time
    from twisted_graceful._forkserver import serve

    def run():
        ignored = [s for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
                   if signal.getsignal(s) == signal.SIG_IGN]
        def isOpen(fd):
            try:
                os.fstat(fd)
            except OSError:
                return False
            return True

        report = {"fds": [fd for fd in range(64) if isOpen(fd)],
                  "env": dict(os.environ), "cwd": os.getcwd(), "ignored": ignored,
                  "inheritable": os.get_inheritable(5), "ppid": os.getppid()}
        os.write(5, json.dumps(report).encode())
        os.close(5)
        os.write(6, os.read(7, 100))
        # Still running when the main code ends: joined, as at the end of
        # an interpreter, or cut off.
        threading.Thread(target=lambda: (time.sleep(0.2), os.write(6, b" and the rest"))).start()
        sys.exit(int(os.environ.get("EXIT", "0")))

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[1])), run)
    """
)


class ForkServerLoopTests(SynchronousTestCase):
    """
    L{serve} in a process of its own, driven over its socket as the
    supervisor drives it.
    """

    def setUp(self) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.settimeout(DEADLINE)
        self.server = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.addCleanup(self._end)

    def _end(self) -> None:
        self.control.close()
        try:
            self.server.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
            raise AssertionError("the fork server did not exit at the end of its socket")

    def request(self, tmp: Path, env: dict[str, str]) -> tuple[int, dict[str, Any], bytes]:
        """
        Ask for one child; return its pid, its report and what it echoed.
        """
        report, reportW = os.pipe()
        echo, echoW = os.pipe()
        feedR, feed = os.pipe()
        os.write(feed, b"echo me")
        message = {"fds": [0, 1, 2, 5, 6, 7], "env": env, "cwd": str(tmp), "ignore": [int(signal.SIGHUP)]}
        null = os.open(os.devnull, os.O_RDWR)
        socket.send_fds(self.control, [json.dumps(message).encode()], [null, null, 2, reportW, echoW, feedR])
        for fd in (null, reportW, echoW, feedR):
            os.close(fd)
        reply = json.loads(self.control.recv(65536))
        with os.fdopen(report, "rb") as r, os.fdopen(echo, "rb") as e:
            told = json.loads(r.read())
            os.close(feed)
            return reply["pid"], told, e.read()

    def exitStatus(self, pid: int) -> int:
        while True:
            message = json.loads(self.control.recv(65536))
            if message.get("exited") == pid:
                return int(message["status"])

    def test_childGetsWhatWasAsked(self) -> None:
        """
        A child gets the descriptors at the numbers asked (inheritable) and
        no other, the environment and directory asked, the signals asked
        ignored (and not the fork server's own), and is reported: its pid,
        then its exit status.
        """
        tmp = Path(self.mktemp())
        tmp.mkdir()
        pid, report, echoed = self.request(tmp, {"ONLY": "this", "EXIT": "7"})
        self.assertEqual(report["fds"], [0, 1, 2, 5, 6, 7])
        self.assertEqual(report["env"], {"ONLY": "this", "EXIT": "7"})
        self.assertEqual(report["cwd"], str(tmp.resolve()))
        self.assertEqual(report["ignored"], [int(signal.SIGHUP)])
        self.assertTrue(report["inheritable"])
        self.assertEqual(report["ppid"], self.server.pid)
        self.assertEqual(echoed, b"echo me and the rest", "its threads joined before it exits")
        status = self.exitStatus(pid)
        self.assertEqual((os.WIFEXITED(status), os.WEXITSTATUS(status)), (True, 7))

    def test_malformedRequest(self) -> None:
        """
        A request it cannot read is answered with an error, and the
        descriptors that came with it are closed; it serves on.
        """
        r, w = os.pipe()
        socket.send_fds(self.control, [b'{"fds": [3]}'], [w])
        os.close(w)
        reply = json.loads(self.control.recv(65536))
        self.assertIn("malformed request", reply["error"])
        self.assertEqual(os.read(r, 1), b"", "its copy of the pipe is closed")
        os.close(r)
        tmp = Path(self.mktemp())
        tmp.mkdir()
        pid, report, _ = self.request(tmp, {})
        self.assertEqual(self.exitStatus(pid), 0)


class Recorder(ProcessProtocol):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def connectionMade(self) -> None:
        self.events.append(("made", self.transport.pid))  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.events.append(("data", (childFD, data)))

    def childConnectionLost(self, childFD: int) -> None:
        self.events.append(("lost", childFD))

    def processExited(self, reason: Failure) -> None:
        self.events.append(("exited", reason))

    def processEnded(self, reason: Failure) -> None:
        self.events.append(("ended", reason))


class ForkServerClientTests(SynchronousTestCase):
    """
    L{ForkServer} against a fork server the test plays on the other end of
    its socket.
    """

    def setUp(self) -> None:
        ours, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.peer.settimeout(DEADLINE)
        self.reaped: list[int] = []
        self.killed: list[tuple[int, int]] = []
        self.alive = False
        self.server = ForkServer(ours, 4000, waitpid=self.waitpid, kill=lambda pid, s: self.killed.append((pid, s)))
        self.reactor = MemoryReactorClock()
        self.addCleanup(self.peer.close)

    def waitpid(self, pid: int, flags: int) -> tuple[int, int]:
        self.reaped.append(pid)
        return (0, 0) if self.alive and flags == os.WNOHANG else (pid, 0)

    def spawn(self, pid: int = 4242) -> tuple[Recorder, Any, dict[str, Any], list[int]]:
        """
        Start a process whose pid the peer answers; return the protocol, the
        transport, the request and the descriptors passed.
        """
        self.peer.send(json.dumps({"pid": pid}).encode())
        proto = Recorder()
        transport = self.server.spawnProcess(
            self.reactor, proto, {"A": "1"}, "/srv", {0: 0, 1: 1, 2: 2, 3: "r", 4: "w"}, [signal.SIGHUP]
        )
        data, fds, _, _ = socket.recv_fds(self.peer, 65536, 16)
        for fd in fds:
            self.addCleanup(_closeQuietly, fd)
        return proto, transport, json.loads(data), fds

    def test_request(self) -> None:
        """
        The request names each target descriptor with the one passed for it
        (a pipe end for C{"r"} and C{"w"}), the environment, directory and
        ignored signals; the transport has the pid the fork server answered.
        """
        before = _openDescriptors()
        proto, transport, request, fds = self.spawn()
        self.assertEqual(request, {"fds": [0, 1, 2, 3, 4], "env": {"A": "1"}, "cwd": "/srv", "ignore": [1]})
        self.assertEqual(len(fds), 5)
        self.assertEqual((transport.pid, proto.events), (4242, [("made", 4242)]))
        os.write(fds[3], b"ready\n")
        transport.pipes[3].doRead()
        self.assertEqual(proto.events[-1], ("data", (3, b"ready\n")))
        transport.writeToChild(4, b"hello")
        transport.pipes[4].doWrite()
        self.assertEqual(os.read(fds[4], 5), b"hello")
        # This process keeps only its own two ends.
        self.assertEqual(len(_openDescriptors() - before), 2 + len(fds))

    def test_exitReported(self) -> None:
        """
        The exit status the fork server reports is the process's
        C{processExited}; C{processEnded} comes once its pipes are closed
        too, as for a process Twisted spawned.
        """
        proto, transport, _, fds = self.spawn()
        self.peer.send(json.dumps({"exited": 4242, "status": 3 << 8}).encode())
        self.server.doRead()
        kind, reason = proto.events[-1]
        self.assertEqual(kind, "exited")
        self.assertEqual(reason.value.exitCode, 3)
        self.assertIsNone(transport.pid)
        for childFD in (3, 4):
            transport.pipes[childFD].connectionLost(Failure(ProcessDone(0)))
        self.assertEqual([e[0] for e in proto.events[-3:]], ["lost", "lost", "ended"])
        self.assertIsInstance(proto.events[-1][1].value, ProcessTerminated)

    def test_killedBySignal(self) -> None:
        """
        A process killed by a signal ends with that signal.
        """
        proto, transport, _, _ = self.spawn()
        self.peer.send(json.dumps({"exited": 4242, "status": signal.SIGKILL}).encode())
        self.server.doRead()
        self.assertEqual(proto.events[-1][1].value.signal, signal.SIGKILL)

    def test_errorReply(self) -> None:
        """
        An error from the fork server is a L{ForkServerError}, and the
        pipes made for the process are closed.
        """
        before = _openDescriptors()
        self.peer.send(json.dumps({"error": "fork failed: no memory"}).encode())
        with self.assertRaises(ForkServerError) as caught:
            self.server.spawnProcess(self.reactor, Recorder(), {}, "/", {3: "r"})
        self.assertIn("no memory", str(caught.exception))
        _, fds, _, _ = socket.recv_fds(self.peer, 65536, 16)
        for fd in fds:
            os.close(fd)
        self.assertEqual(_openDescriptors(), before)

    def test_lostForkServer(self) -> None:
        """
        Once the fork server is gone it starts nothing more, it is reaped,
        and a process it started ends when its pipes close, its status
        unknown.
        """
        proto, transport, _, fds = self.spawn()
        self.peer.close()
        self.server.doRead()
        self.assertIn("has exited", self.server.lost or "")
        self.assertEqual((self.reaped, self.killed), ([4000], []))
        self.assertNotIn("exited", [e[0] for e in proto.events], "it may serve on")
        with self.assertRaises(ForkServerError):
            self.server.spawnProcess(self.reactor, Recorder(), {}, "/", {})
        for childFD in (3, 4):
            transport.pipes[childFD].connectionLost(Failure(ProcessDone(0)))
        self.assertEqual([e[0] for e in proto.events[-2:]], ["exited", "ended"])
        self.assertIsNone(proto.events[-1][1].value.exitCode)

    def test_noReply(self) -> None:
        """
        A fork server that does not answer in time is given up.
        """
        from twisted_graceful import _forkserver

        self.patch(_forkserver, "REPLY_TIMEOUT", 0.01)
        self.alive = True
        with self.assertRaises(ForkServerError) as caught:
            self.server.spawnProcess(self.reactor, Recorder(), {}, "/", {})
        self.assertIn("did not answer", str(caught.exception))
        self.assertEqual((self.killed, self.reaped), ([(4000, signal.SIGKILL)], [4000, 4000]), "killed and reaped")

    def test_deathSeenWhileForkServerSilent(self) -> None:
        """
        A process whose pipes have all closed, and whose exit the fork
        server does not report (stopped, stuck), is taken for dead after a
        wait, its status unknown; a report within the wait is used.
        """
        from twisted_graceful._forkserver import EXIT_REPORT_WAIT

        proto, transport, _, _ = self.spawn()
        for childFD in (3, 4):
            transport.pipes[childFD].connectionLost(Failure(ProcessDone(0)))
        self.reactor.advance(EXIT_REPORT_WAIT - 0.1)
        self.assertNotIn("exited", [e[0] for e in proto.events])
        self.reactor.advance(0.1)
        self.assertEqual([e[0] for e in proto.events[-2:]], ["exited", "ended"])
        self.assertIsNone(proto.events[-1][1].value.exitCode)
        proto, transport, _, _ = self.spawn(4243)
        for childFD in (3, 4):
            transport.pipes[childFD].connectionLost(Failure(ProcessDone(0)))
        self.peer.send(json.dumps({"exited": 4243, "status": 0}).encode())
        self.server.doRead()
        self.reactor.advance(EXIT_REPORT_WAIT)
        self.assertEqual([e[0] for e in proto.events].count("ended"), 1)
        self.assertIsInstance(proto.events[-1][1].value, ProcessDone)

    def test_tooLargeRefusedAlone(self) -> None:
        """
        A request too large for the socket is refused, alone: the fork
        server serves on.
        """
        with self.assertRaises(ForkServerError) as caught:
            self.server.spawnProcess(self.reactor, Recorder(), {"BIG": "x" * 2**21}, "/", {3: "r"})
        self.assertIn("refused", str(caught.exception))
        self.assertIsNone(self.server.lost)
        self.spawn()


class PreloadTests(SynchronousTestCase):
    def test_noReactorNoEndpoints(self) -> None:
        """
        What the fork server loads for its workers installs no reactor and
        leaves Twisted's endpoint parsers unloaded, as in a fresh
        interpreter (their presence says systemd's variables were consumed).
        """
        code = (
            "import sys\n"
            "from twisted_graceful import _forkserver\n"
            "_forkserver._preload()\n"
            "print(sorted(m for m in ('twisted.internet.reactor', 'twisted.internet.endpoints',"
            " 'twisted.internet.testing', 'twisted.web.server') if m in sys.modules))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual((out.stdout.strip(), out.stderr), ("['twisted.web.server']", ""))


class CannotForkTests(SynchronousTestCase):
    def test_reactorInstalled(self) -> None:
        """
        This test process runs a reactor: no fork server is forked from it.
        """
        import twisted.internet.reactor  # noqa: F401

        self.assertIn("reactor is installed", cannotFork() or "")


class FailingForkServer:
    lost = None
    pid = 4000

    def spawnProcess(self, *args: Any) -> Any:
        raise ForkServerError("the fork server (pid 4000) has exited")


class SupervisorForkTests(SynchronousTestCase):
    def test_fallsBackToFreshInterpreter(self) -> None:
        """
        A worker the fork server cannot start starts as a fresh interpreter
        running the supervisor's command.
        """
        reactor = SpawningReactor()
        service = SupervisorService(
            workers=1, reactor=reactor, handleSignals=False, workerArgv=["/venv/bin/twistd", "graceful"],
            forkServer=FailingForkServer(),  # type: ignore[arg-type]
        )
        service._spawnWorker(service.pool, 1)
        (process,) = reactor.processes
        self.assertEqual(process.args[-2:], ["/venv/bin/twistd", "graceful"])
        self.assertIn('"forkServer": 4000', process.env["TWISTED_GRACEFUL_WORKER"])


def _openDescriptors() -> set[int]:
    return {int(f) for f in os.listdir("/proc/self/fd")}


def _closeQuietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class DescribeExitTests(SynchronousTestCase):
    def test_unknown(self) -> None:
        """
        An exit the fork server could not report is said to be unknown.
        """
        from twisted_graceful._child import describeExit

        self.assertEqual(describeExit(Failure(ProcessTerminated(None, None, None))), "exit status unknown")
        self.assertEqual(describeExit(Failure(ProcessTerminated(3, None, 3 << 8))), "exit status 3")
