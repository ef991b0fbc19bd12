# -*- test-case-name: tests.test_forkserver -*-
"""
The fork server: a worker in the time of a C{fork} and the application's
import, not a fresh interpreter's.

C{twistd graceful --workers N} forks the fork server from itself while it
parses its options: Twisted and this package are imported, no reactor is
installed, no thread runs, the application is not loaded yet.  The fork
server never runs a reactor.  For each worker the supervisor sends it a
request on a C{SOCK_SEQPACKET} socket (the environment, the directory, the
signals to ignore, and the descriptors, passed with C{SCM_RIGHTS}); it
forks, and the child puts the descriptors in place and runs the program's
C{__main__} again, as a fresh interpreter would: C{twistd} parses the same
command line, loads the application (its current code) and serves as a
worker.  The fork server reports each child's pid, then its exit status,
since it is their parent.

So a rolling restart (SIGHUP) loads new application code, and the restart
signal (a new supervisor, a new fork server) loads new code of everything.
"""

from __future__ import annotations

import atexit
import errno
import gc
import importlib
import json
import os
import pkgutil
import runpy
import select
import signal
import socket
import sys
import threading
import traceback
from typing import Any, Callable, Iterable, NoReturn

from twisted.internet import error, process
from twisted.logger import Logger
from twisted.python.failure import Failure

MAX_MESSAGE = 1 << 20
MAX_DESCRIPTORS = 64
REPLY_TIMEOUT = 2.0
EXIT_REPORT_WAIT = 2.0
"""
Seconds a process whose every pipe has closed may wait for the fork
server's report of its exit before it is taken for dead, its status
unknown (the fork server is stopped or stuck).
"""
_OWN_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
PRELOAD = (
    "twisted.scripts.twistd",
    "twisted.internet.epollreactor",
    "twisted.web.server",
    "twisted.web.wsgi",
)
"""
Modules every worker imports: loaded once in the fork server and shared by
its children (with every module of this package).  Not
C{twisted.internet.endpoints}: once it is loaded, systemd's variables are
taken to be consumed by its parsers (L{twisted_graceful._systemd}).
"""


class ForkServerError(Exception):
    """
    The fork server cannot start this worker (or any more).
    """


def cannotFork() -> str | None:
    """
    Why this process cannot fork a fork server now, or L{None} if it can.
    """
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds") or not hasattr(socket, "SOCK_SEQPACKET"):
        return "this platform has no fork or descriptor passing"
    if "twisted.internet.reactor" in sys.modules:
        return "a reactor is installed already (--reactor, or an import that installs one)"
    if threading.active_count() > 1:
        return "threads are running"
    if _mainToRun() is None:
        return "this program's __main__ cannot be run again (python -c, or an embedded interpreter)"
    return None


def _mainToRun() -> Callable[[], object] | None:
    """
    A function that runs the program's C{__main__} again, as the
    interpreter did: the module it ran (C{python -m}), or the script.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        name = spec.name
        return lambda: runpy.run_module(name, run_name="__main__", alter_sys=True)
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and os.path.isfile(path):
        return lambda: runpy.run_path(path, run_name="__main__")
    return None


def start(
    detach: bool, uid: int | None = None, gid: int | None = None, euid: bool = False, umask: int | None = None
) -> ForkServer:
    """
    Fork the fork server from this process.

    @param detach: Give it a session of its own and no terminal (the
        supervisor is about to daemonize).
    @param uid: The user to run as (C{twistd --uid}), if this process may
        switch: the fork server drops its privileges at once, as the
        supervisor does once it has bound its sockets.
    @param gid: The group to run as (C{twistd --gid}).
    @param euid: Switch the effective ids only (C{twistd --euid}).
    @param umask: C{twistd --umask}; when detaching, twistd's default for a
        daemon (C{0o077}) if L{None}, as the supervisor gets.
    @raise OSError: It could not be forked.
    """
    run = _mainToRun()
    assert run is not None, "check cannotFork() first"
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (ours, theirs):
        # A request carries the environment: room for a large one.
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                end.setsockopt(socket.SOL_SOCKET, option, MAX_MESSAGE)
            except OSError:
                pass
    if umask is None and detach:
        umask = 0o077
    _flushOutput()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the fork server's own process)
        try:
            ours.close()
            if umask is not None:
                os.umask(umask)
            _serve(theirs, run, detach, (uid, gid, euid))
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(0)
    theirs.close()
    return ForkServer(ours, pid)


def _flushOutput() -> None:
    """
    Write out what is buffered for standard output and error, before a
    fork copies it (or an exit loses it).
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _closeAllBut(keep: Iterable[int]) -> None:
    """
    Close every descriptor but those in C{keep}.
    """
    top = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536
    low = 0
    for fd in [*sorted(set(keep)), max(top, *keep, 0) + 1]:
        # Never an empty range: Python's closerange(n, n) closes every
        # descriptor from n up, on Linux.
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def _preload() -> None:
    package = sys.modules[__name__.rpartition(".")[0]]
    names = [*PRELOAD, *(
        f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__) if m.name != "__main__"
    )]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            pass  # An optional extra that is not installed: the worker says so itself.


def _serve(
    control: socket.socket, run: Callable[[], object], detach: bool, ids: tuple[int | None, int | None, bool]
) -> None:  # pragma: no cover
    """
    The fork server's loop: fork a worker per request, report its pid and
    its exit; return when the supervisor is gone.
    """
    _closeAllBut((0, 1, 2, control.fileno()))
    uid, gid, euid = ids
    if (uid is not None or gid is not None) and os.getuid() == 0:
        from twisted.python.util import switchUID

        switchUID(uid, gid, euid)
    if detach:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    for signum in _OWN_SIGNALS:
        # The supervisor's signals are its own; the fork server ends when
        # its socket closes.
        signal.signal(signum, signal.SIG_IGN)
    _preload()
    gc.collect()
    # Shared with every worker and left out of its collections (it keeps
    # them frozen): no collection pause over them, no copy of their pages.
    gc.freeze()
    serve(control, run)


def serve(control: socket.socket, run: Callable[[], object]) -> None:
    """
    Fork a process per request on C{control} that runs C{run}; report its
    pid and its exit status; return at end of file.
    """
    wakeRead, wakeWrite = os.pipe()
    for fd in (wakeRead, wakeWrite):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeWrite)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    control.setblocking(True)
    try:
        while True:
            readable = select.select([control.fileno(), wakeRead], [], [])[0]
            if wakeRead in readable:
                try:
                    os.read(wakeRead, 4096)
                except BlockingIOError:
                    pass
            if control.fileno() in readable:
                try:
                    data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, MAX_DESCRIPTORS)
                except InterruptedError:
                    continue
                if not data:
                    return
                _fork(control, data, fds, run, (wakeRead, wakeWrite))
            _reap(control)
    except BrokenPipeError:
        return  # The supervisor is gone.
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (wakeRead, wakeWrite):
            os.close(fd)


def _reply(control: socket.socket, **message: Any) -> None:
    control.send(json.dumps(message).encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _reply(control, exited=pid, status=status)


def _fork(
    control: socket.socket, data: bytes, fds: list[int], run: Callable[[], object], wake: tuple[int, int]
) -> None:
    try:
        request = json.loads(data)
        targets = [int(t) for t in request["fds"]]
        env = {str(k): str(v) for k, v in request["env"].items()}
        cwd, ignore = str(request["cwd"]), [int(s) for s in request["ignore"]]
        if len(targets) != len(fds):
            raise ValueError(f"{len(targets)} descriptors named, {len(fds)} passed")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        for fd in fds:
            os.close(fd)
        _reply(control, error=f"malformed request: {e}")
        return
    _flushOutput()
    try:
        pid = os.fork()
    except OSError as e:
        pid = -1
        reason = str(e)
    if pid == 0:  # pragma: no cover (the worker's process)
        _becomeChild(control, wake, targets, fds, env, cwd, ignore, run)
    for fd in fds:
        os.close(fd)
    if pid < 0:
        _reply(control, error=f"fork failed: {reason}")
    else:
        _reply(control, pid=pid)


def _becomeChild(  # pragma: no cover (the worker's process)
    control: socket.socket,
    wake: tuple[int, int],
    targets: list[int],
    fds: list[int],
    env: dict[str, str],
    cwd: str,
    ignore: list[int],
    run: Callable[[], object],
) -> NoReturn:
    """
    Become what the supervisor asked for, run C{run}, and exit: never
    return into the fork server's loop.
    """
    code: int = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (*_OWN_SIGNALS, signal.SIGCHLD):
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        for number in ignore:
            signal.signal(number, signal.SIG_IGN)
        placeDescriptors(targets, fds, closing=[control.fileno(), *wake])
        control.detach()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        try:
            run()
            code = 0
        except SystemExit as e:
            code = _exitCode(e.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            # As the interpreter ends: join the threads left running, then
            # the exit functions.
            threading._shutdown()  # type: ignore[attr-defined]
            atexit._run_exitfuncs()
            _flushOutput()
        finally:
            os._exit(code)


def _exitCode(code: object) -> int:
    """
    The status C{sys.exit(code)} gives, as the interpreter says it.
    """
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def placeDescriptors(targets: list[int], fds: list[int], closing: Iterable[int] = ()) -> None:
    """
    Put each of C{fds} at its number in C{targets} (inheritable), and close
    every other descriptor.
    """
    for fd in closing:
        os.close(fd)
    floor = max([*targets, *fds, 2]) + 1
    moved = [_dupAbove(fd, floor) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(moved, targets):
        os.dup2(fd, target)
    _closeAllBut([*targets, *(fd for fd in (0, 1, 2) if fd not in targets)])


def _dupAbove(fd: int, floor: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)


def _reason(status: int) -> Failure:
    """
    Why a process ended, from its wait status, as Twisted says it.
    """
    exitCode = sig = None
    if os.WIFEXITED(status):
        exitCode = os.WEXITSTATUS(status)
    else:
        sig = os.WTERMSIG(status)
    if exitCode or sig:
        return Failure(error.ProcessTerminated(exitCode, sig, status))
    return Failure(error.ProcessDone(status))


class ForkedProcess:
    """
    The transport of a process the fork server started: its pipes, as
    Twisted's own process transport has them, and its exit as the fork
    server reports it.

    @ivar pid: Its pid.
    """

    def __init__(self, reactor: Any, proto: Any, pid: int, pipes: dict[int, tuple[str, int]]) -> None:
        self.pid: int | None = pid
        self.proto = proto
        self._reactor = reactor
        self._reportWait: Any = None
        self.pipes: dict[int, Any] = {}
        self._reason: Failure | None = None
        self._orphaned: Failure | None = None
        self._ended = False
        for childFD, (kind, fd) in pipes.items():
            if kind == "r":
                self.pipes[childFD] = process.ProcessReader(reactor, self, childFD, fd)
            else:
                self.pipes[childFD] = process.ProcessWriter(reactor, self, childFD, fd)
        proto.makeConnection(self)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.proto.childDataReceived(childFD, data)

    def childConnectionLost(self, childFD: int, reason: Failure) -> None:
        os.close(self.pipes.pop(childFD).fileno())
        self.proto.childConnectionLost(childFD)
        self._maybeEnded()

    def exited(self, reason: Failure) -> None:
        """
        The fork server reaped it (or is gone, or silent, and C{reason} says
        so).
        """
        if self._reportWait is not None and self._reportWait.active():
            self._reportWait.cancel()
        self._reportWait = None
        if self._reason is not None:
            return
        self._reason = reason
        self.pid = None
        self.proto.processExited(reason)
        self._maybeEnded()

    def orphan(self, reason: Failure) -> None:
        """
        The fork server is gone: the process has exited, for C{reason}, once
        every pipe to it has closed.
        """
        self._orphaned = reason
        self._maybeEnded()

    def _maybeEnded(self) -> None:
        if self._orphaned is not None and not self.pipes and self._reason is None:
            self.exited(self._orphaned)
            return
        if self._reason is None and not self.pipes and self._reportWait is None:
            # Every pipe closed: it has exited, or is about to.  Its report
            # comes at once from a fork server that works.
            self._reportWait = self._reactor.callLater(
                EXIT_REPORT_WAIT, self.exited, Failure(error.ProcessTerminated(None, None, None))
            )
            return
        if self._reason is not None and not self.pipes and not self._ended:
            self._ended = True
            self.proto.processEnded(self._reason)

    def writeToChild(self, childFD: int, data: bytes) -> None:
        self.pipes[childFD].write(data)

    def closeChildFD(self, childFD: int) -> None:
        if childFD in self.pipes:
            self.pipes[childFD].loseConnection()

    def signalProcess(self, signalID: int) -> None:
        if self.pid is None:
            raise error.ProcessExitedAlready()
        try:
            os.kill(self.pid, signalID)
        except ProcessLookupError:
            raise error.ProcessExitedAlready() from None

    def loseConnection(self) -> None:
        for childFD in list(self.pipes):
            self.closeChildFD(childFD)


class ForkServer:
    """
    The supervisor's side of the fork server.

    @ivar pid: The fork server's pid.
    @ivar lost: Why it can start no more workers, or L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        control: socket.socket,
        pid: int,
        waitpid: Callable[[int, int], tuple[int, int]] = os.waitpid,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self.pid = pid
        self.lost: str | None = None
        self._control = control
        self._control.setblocking(False)
        self._waitpid = waitpid
        self._kill = kill
        self._reactor: Any = None
        self._processes: dict[int, ForkedProcess] = {}

    def fileno(self) -> int:
        return self._control.fileno()

    def logPrefix(self) -> str:
        return "ForkServer"

    def spawnProcess(
        self,
        reactor: Any,
        processProtocol: Any,
        env: dict[str, str],
        path: str,
        childFDs: dict[int, int | str],
        ignore: Iterable[int] = (),
    ) -> ForkedProcess:
        """
        Start a process as C{reactor.spawnProcess} would run the program's
        own command, forked by the fork server.

        @param childFDs: As for C{spawnProcess}: a descriptor of this
            process, or C{"r"} (this process reads) or C{"w"} (it writes).
        @param ignore: Signals the process starts ignoring.
        @raise ForkServerError: The fork server did not start it.
        """
        if self.lost is not None:
            raise ForkServerError(self.lost)
        if self._reactor is None:
            self._reactor = reactor
            reactor.addReader(self)
        targets: list[int] = []
        passed: list[int] = []
        ours: dict[int, tuple[str, int]] = {}
        theirs: list[int] = []
        try:
            for childFD, parent in sorted(childFDs.items()):
                if isinstance(parent, int):
                    passed.append(parent)
                else:
                    readEnd, writeEnd = os.pipe()
                    # "r": this process reads, the child writes.
                    mine, child = (readEnd, writeEnd) if parent == "r" else (writeEnd, readEnd)
                    ours[childFD] = (parent, mine)
                    theirs.append(child)
                    passed.append(child)
                targets.append(childFD)
            request = json.dumps({"fds": targets, "env": env, "cwd": path, "ignore": sorted(set(ignore))})
            pid = self._request(request.encode(), passed)
        except BaseException:
            for _, fd in ours.values():
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        transport = ForkedProcess(reactor, processProtocol, pid, ours)
        self._processes[pid] = transport
        return transport

    def _request(self, data: bytes, fds: list[int]) -> int:
        try:
            socket.send_fds(self._control, [data], fds)
        except OSError as e:
            if e.errno in (errno.EMSGSIZE, errno.ENOBUFS, errno.ETOOMANYREFS):
                # This request only (an environment too large to pass).
                raise ForkServerError(f"the request to the fork server was refused: {e}") from None
            self._lose(f"the fork server (pid {self.pid}) cannot be reached: {e}")
            raise ForkServerError(self.lost) from None
        # It answers within a fork's time: wait, so that the pid is known
        # when the transport is made; reports of exits may come first.
        deadline = self._reactor.seconds() + REPLY_TIMEOUT if self._reactor is not None else None
        while True:
            message = self._receive(block=True, deadline=deadline)
            if message is None:
                raise ForkServerError(self.lost or f"the fork server (pid {self.pid}) did not answer")
            if "exited" in message:
                self._exited(message["exited"], message["status"])
            elif "pid" in message:
                return int(message["pid"])
            else:
                raise ForkServerError(f"the fork server (pid {self.pid}) said: {message.get('error')}")

    def _receive(self, block: bool = False, deadline: float | None = None) -> dict[str, Any] | None:
        """
        One message from the fork server, or L{None} (nothing there when not
        blocking; it is gone, and C{self.lost} says so).
        """
        while True:
            try:
                data = self._control.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                if not block:
                    return None
                timeout = None if deadline is None else max(0.0, deadline - self._reactor.seconds())
                if not select.select([self._control], [], [], timeout)[0]:
                    self._lose(f"the fork server (pid {self.pid}) did not answer within {REPLY_TIMEOUT:g} s", stuck=True)
                    return None
                continue
            except OSError as e:
                if e.errno not in (errno.ECONNRESET,):
                    raise
                data = b""
            if not data:
                self._lose(f"the fork server (pid {self.pid}) has exited")
                return None
            try:
                message = json.loads(data)
                if isinstance(message, dict):
                    return message
            except ValueError:
                pass
            self._log.warn("Ignoring a malformed message from the fork server: {data!r}", data=data[:200])

    def doRead(self) -> None:
        while self.lost is None:
            message = self._receive()
            if message is None:
                return
            if "exited" in message:
                self._exited(message["exited"], message["status"])

    def _exited(self, pid: object, status: object) -> None:
        if not isinstance(pid, int) or not isinstance(status, int):
            return
        transport = self._processes.pop(pid, None)
        if transport is not None:
            transport.exited(_reason(status))

    def _lose(self, why: str, stuck: bool = False) -> None:
        if self.lost is not None:
            return
        self.lost = why
        if self._reactor is not None:
            self._reactor.removeReader(self)
        self._control.close()
        self._end(stuck)
        orphans, self._processes = self._processes, {}
        if orphans:
            self._log.warn(
                "{why}: {count} workers it started serve on, their exit statuses unknown; "
                "new workers start as fresh interpreters",
                why=why[0].upper() + why[1:],
                count=len(orphans),
                phase="fork-server-lost",
            )
        for transport in orphans.values():
            transport.orphan(Failure(error.ProcessTerminated(None, None, None)))

    def _end(self, stuck: bool) -> None:
        """
        Reap the fork server if it is this process's child (in the
        foreground; a daemon's is init's), killing it first if it lives on;
        kill it if it is C{stuck}.
        """
        try:
            pid, _ = self._waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            if stuck:
                try:
                    self._kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        if pid == 0:
            # Alive, and ours: it has no work left, and must not linger as
            # a zombie.
            self._kill(self.pid, signal.SIGKILL)
            self._waitpid(self.pid, 0)

    def connectionLost(self, reason: Failure) -> None:
        self._lose(f"the fork server (pid {self.pid}) has exited")

    def close(self) -> None:
        """
        End the fork server: it exits once its socket closes.  The workers
        it started are not touched.
        """
        self._lose("the fork server was closed")
