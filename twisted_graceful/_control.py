# -*- test-case-name: tests.test_control -*-
"""
C{twisted-graceful} (also C{python -m twisted_graceful}): reload, stop and
inspect a running server through its pid file and the status file beside it.

Exit status: 0 done; 1 the operation failed (the server says why; after a
failed reload the old process still serves); 2 bad arguments; 3 no server
(the pid file is missing, stale, garbage, or names a process that is not
ours); 4 no outcome within C{--timeout}; 5 stopped, but the drain was cut at
its deadline.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any, Callable, Sequence

from ._pidfile import PidFile, isAlive as _alive
from ._errors import PidFileError
from ._signals import signalNumber
from ._status import readStatus, statusPathFor

OK, FAILED, USAGE, NO_SERVER, TIMEOUT, CUT = 0, 1, 2, 3, 4, 5
POLL = 0.02


class ControlError(Exception):
    """
    Ends the command with a message and an exit status.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def findServer(pidFile: str) -> tuple[int, dict[str, Any]]:
    """
    The pid and status of the server C{pidFile} names.

    @raise ControlError: There is no such server.
    """
    try:
        pid = PidFile(pidFile).read()
    except PidFileError as e:
        raise ControlError(str(e), NO_SERVER) from None
    if pid is None:
        raise ControlError(
            f"No pid file at {pidFile}: is the server running? Start it with "
            f"twistd --pidfile={pidFile} graceful ...",
            NO_SERVER,
        )
    if not _alive(pid):
        raise ControlError(f"{pidFile} names pid {pid}, which is not running (a stale pid file).", NO_SERVER)
    status = readStatus(statusPathFor(pidFile))
    if status is None or status.get("pid") != pid:
        raise ControlError(
            f"pid {pid} (from {pidFile}) is not a twisted-graceful server: no status file "
            f"{statusPathFor(pidFile)} names it.",
            NO_SERVER,
        )
    return pid, status


def _wait(timeout: float, done: Callable[[], Any], what: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = done()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise ControlError(f"No outcome within {timeout:g} s: {what()}", TIMEOUT)
        time.sleep(POLL)


def reload(pidFile: str, timeout: float, signum: int, out: Callable[[str], None]) -> int:
    """
    Restart the server and wait for the outcome.
    """
    pid, status = findServer(pidFile)
    attempt = int(status.get("restartAttempts") or 0) + 1
    os.kill(pid, signum)
    statusPath = statusPathFor(pidFile)

    def outcome() -> tuple[int, str] | None:
        current = readStatus(statusPath) or {}
        if current.get("pid") not in (None, pid) and current.get("state") == "serving":
            newPID = int(current["pid"])
            return (OK, str(newPID)) if not _alive(pid) else None
        last = current.get("lastRestart") or {}
        if current.get("pid") == pid and int(last.get("attempt") or 0) >= attempt:
            if last.get("outcome") in ("failed", "refused"):
                return (FAILED, f"Reload failed: {last.get('reason')}. pid {pid} is still serving.")
        if not _alive(pid) and (readStatus(statusPath) or {}).get("pid") == pid:
            return (FAILED, f"pid {pid} exited during the reload without a successor.")
        return None

    code, message = _wait(
        timeout,
        outcome,
        lambda: f"pid {pid} is {(readStatus(statusPath) or {}).get('state', 'unknown')}.",
    )
    out(message)
    return int(code)


def stop(pidFile: str, timeout: float, out: Callable[[str], None]) -> int:
    """
    Stop the server gracefully and wait for it to exit.
    """
    pid, _ = findServer(pidFile)
    os.kill(pid, signal.SIGTERM)
    _wait(timeout, lambda: True if not _alive(pid) else None, lambda: f"pid {pid} is still draining.")
    drain = (readStatus(statusPathFor(pidFile)) or {}).get("drain") or {}
    if drain.get("clean", True):
        out(f"pid {pid} stopped: the drain finished ({drain.get('completed', 0)} requests completed).")
        return OK
    out(
        f"pid {pid} stopped: the drain was cut at its deadline ({drain.get('aborted', 0)} requests "
        f"aborted, {drain.get('abortedConnections', 0)} connections aborted, "
        f"{drain.get('completed', 0)} completed)."
    )
    return CUT


def showStatus(pidFile: str, out: Callable[[str], None]) -> int:
    """
    Print what the server is doing.
    """
    pid, status = findServer(pidFile)
    started = status.get("started")
    uptime = f"{time.time() - started:.0f} s" if isinstance(started, (int, float)) else "unknown"
    state = status.get("state", "unknown")
    out(f"pid: {pid}")
    out(f"state: {state}" + (" (an upgrade is in progress)" if state == "upgrading" else "")
        + (" (a drain is in progress)" if state in ("draining", "handed-over") else ""))
    out(f"generation: {status.get('generation')}")
    out(f"uptime: {uptime}")
    for endpoint, address in (status.get("endpoints") or {}).items():
        out(f"endpoint: {endpoint} at {address}")
    last = status.get("lastRestart")
    if last:
        detail = last.get("reason") or (f"pid {last['pid']}" if last.get("pid") else "")
        out(f"last restart: {last.get('outcome')}" + (f" ({detail})" if detail else ""))
    return OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twisted-graceful",
        description="Reload, stop or inspect a twistd graceful server through its pid file.",
        epilog="Exit status: 0 done, 1 failed, 2 bad arguments, 3 no server, 4 timeout, 5 drain cut.",
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


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command; return its exit status.
    """
    args = _parser().parse_args(argv)
    out = print
    try:
        if args.command == "reload":
            return reload(args.pidfile, args.timeout, args.signal, out)
        if args.command == "stop":
            return stop(args.pidfile, args.timeout, out)
        return showStatus(args.pidfile, out)
    except ControlError as e:
        print(f"twisted-graceful {args.command}: {e}", file=sys.stderr)
        return e.status


def run() -> None:
    """
    The console script.
    """
    sys.exit(main())
