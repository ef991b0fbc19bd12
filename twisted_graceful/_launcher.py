# -*- test-case-name: tests.test_launcher -*-
"""
L{SuccessorLauncher}: starts the process that takes over, running the same
command from the same directory, with the listening sockets.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable, Mapping, Sequence

from twisted.logger import Logger
from twisted.python.failure import Failure

from ._child import DEFAULT_READY_TIMEOUT, ChildProcess, ReadyMessage
from ._errors import ChildExitedEarly
from ._inherit import encodeHandover
from ._listener import maybeGlobalReactor

# systemd's variables name this process: a successor must not take them
# for its own.
_NOT_INHERITED = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class SuccessorLauncher:
    """
    Spawns successors.

    @ivar readyTimeout: Seconds a successor has to report ready.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        argv: Sequence[str] | None = None,
        readyTimeout: float = DEFAULT_READY_TIMEOUT,
        caught: Sequence[int | None] = (signal.SIGUSR2, signal.SIGHUP, signal.SIGUSR1),
        directory: str | None = None,
        environ: Mapping[str, str] | None = None,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        """
        @param reactor: Spawns the process and times its ready deadline;
            the global reactor if L{None}.
        @param argv: The command; C{[sys.executable, *sys.orig_argv[1:]]} by
            default, so C{twistd}, C{python -m twisted} and C{.tac} files
            come back the same way.
        @param caught: The signals the successor handles once it runs: it
            ignores them until then.
        @param directory: Where the successor starts; the current directory
            by default, read now: C{twistd --rundir} changes directory
            later, and relative paths on the command line (a C{.tac} file)
            must mean the same to the successor.
        @param environ: The successor's environment before the hand-over
            variables; C{os.environ} at spawn time by default.
        @param kill: Signals the successor (to terminate it).
        """
        self._reactor = reactor
        self._argv = list(argv) if argv is not None else None
        self.readyTimeout = readyTimeout
        self._caught = sorted({int(s) for s in caught if s is not None})
        self._directory = directory if directory is not None else os.getcwd()
        self._environ = environ
        self._kill = kill

    def command(self) -> list[str]:
        """
        The successor's command line.  It ignores the signals it handles
        until it installs its handlers: one that reaches it while it starts
        must not kill it (the default action).  SIG_IGN survives exec; a
        shell sets it.
        """
        argv = self._argv if self._argv is not None else [sys.executable, *sys.orig_argv[1:]]
        return ["/bin/sh", "-c", f'trap "" {" ".join(map(str, self._caught))}; exec "$0" "$@"', *argv]

    def spawn(
        self,
        sockets: dict[str, int],
        generation: int,
        ready: Callable[[ReadyMessage], None],
        failed: Callable[[Failure], None],
        handoff: int | None = None,
    ) -> ChildProcess:
        """
        Start a successor that inherits C{sockets} (identity to descriptor).

        @param generation: This process's generation.
        @param ready: Called with the successor's ready report.
        @param failed: Called with the reason if it dies or misses the ready
            deadline; also (on the next reactor turn) if it cannot be
            started at all.
        @param handoff: The successor's end of a hand-off channel
            (L{twisted_graceful._handoff.makeChannel}), or L{None}.
        """
        reactor = maybeGlobalReactor(self._reactor)
        handover = encodeHandover(sockets, os.getpid(), generation, handoff)
        source = self._environ if self._environ is not None else os.environ
        environ = {k: v for k, v in source.items() if k not in _NOT_INHERITED}
        environ.update(handover.environ)
        child = ChildProcess(
            reactor,
            handover.readyFD,
            handover.lifelineFD,
            self.readyTimeout,
            ready,
            failed,
            kill=self._kill,
        )
        command = self.command()
        try:
            reactor.spawnProcess(
                child, command[0], command, env=environ, path=self._directory, childFDs=handover.childFDs
            )
        except Exception as e:
            error = ChildExitedEarly(f"Cannot start the successor {command!r}: {e}")
            reactor.callLater(0, failed, Failure(error))
            return child
        self._log.info(
            "Spawned successor {childPID} for {endpoints}",
            childPID=child.spawnedPID,
            endpoints=sorted(sockets),
            generation=generation + 1,
            phase="child-spawned",
        )
        return child
