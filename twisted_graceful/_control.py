# -*- test-case-name: tests.test_control -*-
"""
C{twisted-graceful} (also C{python -m twisted_graceful}): reload, stop and
inspect a running server through its pid file and the status file beside it.

Before it signals anything, the command proves that the pid names the
server: the pid and status files must be owned by root, by the user running
the command, or by the user the named process runs as, in a directory that
nobody else can write (or that is sticky, as C{/tmp}); the status file must
name the pid, with the same process start time (C{/proc/PID/stat}) as the
live process, so a stale pid reused by another process, or files forged to
name one, are refused.  The signal then goes through a pidfd, so it cannot
reach a process that took the pid after the check.

The exit status is an L{ExitStatus}.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
import time
from enum import IntEnum
from typing import Any, Callable, Sequence

from attrs import frozen

from ._pidfile import PidFile, isAlive, processOwner, processStartTime
from ._errors import PidFileError
from ._signals import signalNumber
from ._states import DRAINING_STATES, ServerState, UpgradeOutcome
from ._status import readStatus, statusPathFor

POLL = 0.02


class ExitStatus(IntEnum):
    """
    The exit status of C{twisted-graceful}.
    """

    OK = 0
    "Done."
    FAILED = 1
    """The operation failed; the server says why (after a failed or rolled-back reload the old process
    still serves)."""
    USAGE = 2
    "Bad arguments."
    NO_SERVER = 3
    """No server: the pid file is missing, stale or garbage, or names a process that is not the server
    that wrote the status file (no status, another pid, another start time)."""
    TIMEOUT = 4
    "No outcome within C{--timeout}."
    CUT = 5
    "Stopped, but the drain was cut at its deadline."
    PERMISSION = 6
    "Not allowed: the server runs as another user, or its files cannot be read. Run as that user or root."
    UNSAFE = 7
    """Refused: the pid or status file is owned by another user, or lies in a directory others can write
    (world-writable without the sticky bit, or owned by another user), so anyone could have forged it."""


class ControlError(Exception):
    """
    Ends the command with a one-line message and an exit status.
    """

    def __init__(self, message: str, status: ExitStatus) -> None:
        super().__init__(message)
        self.status = status


class ProcessChanged(ProcessLookupError):
    """
    The pid names another process than the one that was checked.
    """


def signalIfStarted(pid: int, signum: int, startTime: int | None) -> None:
    """
    Send C{signum} to C{pid} only if it is still the process that started
    at C{startTime} (L{None}: not checked).  Where the system has pidfds,
    the check and the signal are about the same process, whatever happens
    to the pid in between.

    @raise ProcessLookupError: The process is gone, or the pid names
        another process now (L{ProcessChanged}).
    @raise PermissionError: The process belongs to another user.
    """
    pidfd = None
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise
        except OSError:
            pidfd = None  # No pidfd support (old kernel, no descriptor left).
    try:
        if startTime is not None and processStartTime(pid) != startTime:
            raise ProcessChanged(errno.ESRCH, f"pid {pid} now names another process")
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
    finally:
        if pidfd is not None:
            os.close(pidfd)


@frozen
class System:
    """
    What the command asks of the operating system; tests pass fakes.
    """

    alive: Callable[[int], bool] = isAlive
    startTime: Callable[[int], int | None] = processStartTime
    owner: Callable[[int], int | None] = processOwner
    signal: Callable[[int, int, int | None], None] = signalIfStarted
    euid: Callable[[], int] = os.geteuid
    lstat: Callable[[str], os.stat_result] = os.lstat
    stat: Callable[[str], os.stat_result] = os.stat
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    hasProc: Callable[[], bool] = lambda: os.path.isdir("/proc/self")


def _checkFile(path: str, pid: int, system: System) -> None:
    """
    Refuse C{path} when someone who could not signal C{pid} themselves may
    have written it.

    @raise ControlError: With L{ExitStatus.UNSAFE}.
    """
    euid = system.euid()
    trusted = {0, euid, system.owner(pid)}
    for candidate in dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]):
        try:
            info = system.lstat(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            continue  # Reading it reports the error.
        if info.st_uid not in trusted:
            raise ControlError(
                f"Refusing {path}: it is owned by uid {info.st_uid}, not by root, by you (uid {euid}) "
                f"or by the user of pid {pid}, so it may be forged. Keep pid files in a directory only "
                "the server's user can write, such as /run/APP.",
                ExitStatus.UNSAFE,
            )
        directory = os.path.dirname(candidate)
        try:
            where = system.stat(directory)
        except OSError:
            continue
        sticky = bool(where.st_mode & stat.S_ISVTX)
        if where.st_mode & stat.S_IWOTH and not sticky:
            raise ControlError(
                f"Refusing {path}: its directory {directory} is writable by everyone and not sticky, "
                "so anyone could have replaced it. Keep pid files in a directory only the server's "
                "user can write, such as /run/APP.",
                ExitStatus.UNSAFE,
            )
        if where.st_uid not in trusted:
            raise ControlError(
                f"Refusing {path}: its directory {directory} is owned by uid {where.st_uid}, who could "
                "have replaced it. Keep pid files in a directory only the server's user can write, "
                "such as /run/APP.",
                ExitStatus.UNSAFE,
            )


def _lastServer(statusPath: str) -> str:
    """
    What the status file a stopped server left says of it, as a sentence.
    """
    last = readStatus(statusPath) or {}
    pid = last.get("pid")
    if last.get("state") == "stopped" and isinstance(pid, int) and not isinstance(pid, bool):
        return f"the server is not running (the last one, pid {pid}, stopped; {statusPath} is what it left)."
    return "is the server running?"


def findServer(pidFile: str, system: System | None = None) -> tuple[int, dict[str, Any]]:
    """
    The pid and status of the server C{pidFile} names, once proved (see the
    module's description).

    @raise ControlError: There is no such server, or its files cannot be
        trusted or read.
    """
    system = system if system is not None else System()
    try:
        pid = PidFile(pidFile).read()
    except PidFileError as e:
        if isinstance(e.__cause__, PermissionError):
            raise ControlError(f"{e} Run this as the server's user or root.", ExitStatus.PERMISSION) from None
        raise ControlError(str(e), ExitStatus.NO_SERVER) from None
    statusPath = statusPathFor(pidFile)
    if pid is None:
        raise ControlError(
            f"No pid file at {pidFile}: {_lastServer(statusPath)} Start it with "
            f"twistd --pidfile={pidFile} graceful ...",
            ExitStatus.NO_SERVER,
        )
    if not system.alive(pid):
        other = readStatus(statusPath) or {}
        if other.get("pidFileError") and other.get("pid") not in (None, pid):
            raise ControlError(
                f"{pidFile} names pid {pid}, which is not running: the status file says pid {other['pid']} "
                f"serves but could not write the pid file ({other['pidFileError']}). Fix that, then "
                "restart the server.",
                ExitStatus.NO_SERVER,
            )
        raise ControlError(
            f"{pidFile} names pid {pid}, which is not running (a stale pid file).", ExitStatus.NO_SERVER
        )
    _checkFile(pidFile, pid, system)
    _checkFile(statusPath, pid, system)
    status = readStatus(statusPath)
    if status is None or status.get("pid") != pid:
        raise ControlError(
            f"pid {pid} (from {pidFile}) is not a twisted-graceful server: no status file "
            f"{statusPath} names it.",
            ExitStatus.NO_SERVER,
        )
    if system.hasProc():
        recorded, actual = status.get("startTime"), system.startTime(pid)
        if recorded is None or recorded != actual:
            raise ControlError(
                f"pid {pid} (from {pidFile}) is not the server that wrote {statusPath}: it started at "
                f"tick {actual}, the server at {recorded if recorded is not None else 'an unrecorded time'} "
                "(the pid was reused, or the files are forged).",
                ExitStatus.NO_SERVER,
            )
    return pid, status


def _send(system: System, pid: int, status: dict[str, Any], signum: int) -> None:
    """
    Signal the proved server.

    @raise ControlError: It is gone, changed, or belongs to another user.
    """
    name = signal.Signals(signum).name
    try:
        system.signal(pid, signum, status.get("startTime") if system.hasProc() else None)
    except PermissionError:
        raise ControlError(
            f"Not allowed to send {name} to pid {pid}: it runs as another user. Run this as that "
            "user or root.",
            ExitStatus.PERMISSION,
        ) from None
    except ProcessLookupError as e:
        raise ControlError(
            f"pid {pid} exited before it could be sent {name}"
            + (" and its pid now names another process" if isinstance(e, ProcessChanged) else "")
            + ".",
            ExitStatus.NO_SERVER,
        ) from None


def _wait(system: System, timeout: float, done: Callable[[], Any], what: Callable[[], str]) -> Any:
    deadline = system.monotonic() + timeout
    while True:
        result = done()
        if result is not None:
            return result
        if system.monotonic() > deadline:
            raise ControlError(f"No outcome within {timeout:g} s: {what()}", ExitStatus.TIMEOUT)
        system.sleep(POLL)


def reload(
    pidFile: str, timeout: float, signum: int, out: Callable[[str], None], system: System | None = None
) -> ExitStatus:
    """
    Restart the server and wait for the outcome.
    """
    system = system if system is not None else System()
    pid, status = findServer(pidFile, system)
    attempt = int(status.get("restartAttempts") or 0) + 1
    _send(system, pid, status, signum)
    statusPath = statusPathFor(pidFile)

    def outcome() -> tuple[ExitStatus, str] | None:
        current = readStatus(statusPath) or {}
        if current.get("pid") not in (None, pid) and current.get("state") == ServerState.SERVING:
            newPID = int(current["pid"])
            if system.alive(pid):
                return None
            if current.get("pidFileError"):
                return (
                    ExitStatus.FAILED,
                    f"pid {newPID} serves, but it could not write the pid file: {current['pidFileError']} "
                    "Fix that, then restart the server.",
                )
            return (ExitStatus.OK, str(newPID))
        last = current.get("lastRestart") or {}
        if current.get("pid") == pid and int(last.get("attempt") or 0) >= attempt:
            if last.get("outcome") in (UpgradeOutcome.FAILED, UpgradeOutcome.REFUSED):
                return (ExitStatus.FAILED, f"Reload failed: {last.get('reason')}. pid {pid} is still serving.")
            if last.get("outcome") == UpgradeOutcome.ROLLED_BACK:
                return (ExitStatus.FAILED, f"Reload rolled back: {last.get('reason')}. pid {pid} serves again.")
        if not system.alive(pid) and (readStatus(statusPath) or {}).get("pid") == pid:
            return (ExitStatus.FAILED, f"pid {pid} exited during the reload without a successor.")
        return None

    code, message = _wait(
        system,
        timeout,
        outcome,
        lambda: f"pid {pid} is {(readStatus(statusPath) or {}).get('state', 'unknown')}.",
    )
    out(message)
    return ExitStatus(code)


def stop(pidFile: str, timeout: float, out: Callable[[str], None], system: System | None = None) -> ExitStatus:
    """
    Stop the server gracefully and wait for it to exit.
    """
    system = system if system is not None else System()
    pid, status = findServer(pidFile, system)
    _send(system, pid, status, signal.SIGTERM)
    _wait(system, timeout, lambda: True if not system.alive(pid) else None, lambda: f"pid {pid} is still draining.")
    drain = (readStatus(statusPathFor(pidFile)) or {}).get("drain") or {}
    if drain.get("clean", True):
        out(f"pid {pid} stopped: the drain finished ({drain.get('completed', 0)} requests completed).")
        return ExitStatus.OK
    out(
        f"pid {pid} stopped: the drain was cut at its deadline ({drain.get('aborted', 0)} requests "
        f"aborted, {drain.get('abortedConnections', 0)} connections aborted, "
        f"{drain.get('completed', 0)} completed)."
    )
    return ExitStatus.CUT


def showStatus(pidFile: str, out: Callable[[str], None], system: System | None = None) -> ExitStatus:
    """
    Print what the server is doing.
    """
    pid, status = findServer(pidFile, system)
    started = status.get("started")
    uptime = f"{time.time() - started:.0f} s" if isinstance(started, (int, float)) else "unknown"
    state = status.get("state", "unknown")
    out(f"pid: {pid}")
    out(f"state: {state}" + (" (an upgrade is in progress)" if state == ServerState.UPGRADING else "")
        + (" (a drain is in progress)" if state in DRAINING_STATES else ""))
    out(f"generation: {status.get('generation')}")
    out(f"uptime: {uptime}")
    for endpoint, address in (status.get("endpoints") or {}).items():
        out(f"endpoint: {endpoint} at {address}")
    if status.get("pidFileError"):
        out(f"pid file: not written: {status['pidFileError']}")
    last = status.get("lastRestart")
    if last:
        detail = last.get("reason") or (f"pid {last['pid']}" if last.get("pid") else "")
        out(f"last restart: {last.get('outcome')}" + (f" ({detail})" if detail else ""))
    _showWorkers(status, out)
    return ExitStatus.OK


def _showWorkers(status: dict[str, Any], out: Callable[[str], None]) -> None:
    """
    Print the workers of a C{--workers} supervisor, one line each.
    """
    workers = status.get("workers")
    if not isinstance(workers, list):
        return
    recycled = status.get("recycled")
    out(
        f"workers: {len(workers)}"
        + (f", {recycled} recycled" if isinstance(recycled, int) and recycled else "")
        + (" (crash loop: workers keep failing)" if status.get("crashLoop") else "")
    )
    for worker in workers:
        if isinstance(worker, dict):
            recycling = worker.get("recycling")
            out(
                f"worker: pid {worker.get('pid')} generation {worker.get('generation')} "
                f"{worker.get('state')} requests {worker.get('requests')}"
                + (f" (recycling: {recycling})" if recycling else "")
            )
    rollout = status.get("rollout")
    if isinstance(rollout, dict):
        detail = rollout.get("reason") or ""
        out(f"last rollout: {rollout.get('outcome')} (generation {rollout.get('generation')})"
            + (f": {detail}" if detail else ""))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twisted-graceful",
        description="Reload, stop or inspect a twistd graceful server through its pid file.",
        epilog="Exit status: " + ", ".join(f"{s.value} {_SUMMARY[s]}" for s in ExitStatus) + ".",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in [
        ("reload", "restart with no downtime; print the new pid"),
        ("stop", "drain and stop; say whether the drain finished"),
        ("status", "pid, uptime, generation, endpoints, upgrade or drain in progress"),
    ]:
        command = commands.add_parser(name, help=summary, description=summary)
        command.add_argument("--pidfile", required=True, help="the server's pid file (twistd --pidfile)")
        if name != "status":
            command.add_argument("--timeout", type=_seconds, default=90.0, help="seconds to wait (default 90)")
        if name == "reload":
            command.add_argument("--signal", type=_signal, default=signal.SIGUSR2, help="the restart signal (USR2)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected more than 0 seconds, not {text!r}")
    return value


def _signal(text: str) -> int:
    try:
        return signalNumber(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_SUMMARY = {
    ExitStatus.OK: "done",
    ExitStatus.FAILED: "failed",
    ExitStatus.USAGE: "bad arguments",
    ExitStatus.NO_SERVER: "no server",
    ExitStatus.TIMEOUT: "timeout",
    ExitStatus.CUT: "drain cut",
    ExitStatus.PERMISSION: "not allowed",
    ExitStatus.UNSAFE: "unsafe pid or status file",
}


def main(
    argv: Sequence[str] | None = None,
    system: System | None = None,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> ExitStatus:
    """
    Run the command; return its exit status.  Bad arguments end it with
    C{SystemExit(2)}, as C{argparse} does.
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "reload":
            return reload(args.pidfile, args.timeout, args.signal, out, system)
        if args.command == "stop":
            return stop(args.pidfile, args.timeout, out, system)
        return showStatus(args.pidfile, out, system)
    except ControlError as e:
        err(f"twisted-graceful {args.command}: {e}")
        return e.status


def run() -> None:
    """
    The console script.
    """
    sys.exit(main())
