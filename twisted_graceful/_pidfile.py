# -*- test-case-name: tests.test_pidfile -*-
"""
The pid file across restarts.

C{twistd} writes its pid file early and non-atomically, refuses to start when
the file names any live process (the successor's own parent included), and
deletes the file unconditionally at exit (which would delete the successor's
file).  So the library manages the file instead: the serving process writes
it atomically once it serves alone, a process that handed over never deletes
it, and a final stop deletes it only if it still names the stopping process.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from attrs import frozen

from ._atomic import writeAtomically
from ._errors import PidFileError


def isAlive(pid: int) -> bool:
    """
    Whether C{pid} names a running process.  A zombie (exited, not yet
    reaped) is not running.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def processStartTime(pid: int) -> int | None:
    """
    When C{pid} started, in clock ticks after boot (field 22 of
    C{/proc/PID/stat}), or L{None} when that cannot be read (no such
    process, or no C{/proc}).  A pid reused by another process has another
    start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        # The command name (field 2) is in parentheses and may hold spaces
        # and parentheses: count the fields after the last one.
        return int(data.rsplit(b")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def processOwner(pid: int) -> int | None:
    """
    The user id C{pid} runs as, or L{None} when that cannot be read.
    """
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


@frozen
class PidFile:
    """
    A pid file at C{path}.

    @ivar isAlive: Tells whether a pid names a live process.
    """

    path: str
    isAlive: Callable[[int], bool] = isAlive

    def read(self) -> int | None:
        """
        The pid in the file, or L{None} when there is no file.

        @raise PidFileError: The file cannot be read or holds no pid.
        """
        try:
            with open(self.path, "rb") as f:
                text = f.read(64).decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        except PermissionError as e:
            raise PidFileError(f"Cannot read the pid file {self.path}: {e.strerror}.") from e
        except OSError as e:
            raise PidFileError(f"Cannot read the pid file {self.path}: {e.strerror}.") from None
        if not (text.isascii() and text.isdigit()) or int(text) <= 0:
            raise PidFileError(
                f"The pid file {self.path} holds {text[:40]!r}, not a pid. Remove it if no server is running."
            )
        return int(text)

    def checkStart(self, allowed: int | None = None) -> None:
        """
        Refuse to start when the file names a live process other than
        C{allowed} (the parent of a restarted process).  A file naming a
        process that is gone is stale and is left to be overwritten.

        @raise PidFileError: Another server is running, or the file is bad.
        """
        try:
            pid = self.read()
        except PidFileError:
            return  # Garbage: overwritten once this process serves.
        if pid is None or pid == allowed or pid == os.getpid():
            return
        if self.isAlive(pid):
            raise PidFileError(
                f"Another server is running with pid {pid} (pid file {self.path}). "
                f"Stop it, or restart it with: kill -USR2 {pid}"
            )

    def write(self, pid: int) -> None:
        """
        Write C{pid} atomically: readers see the old content or the new,
        never a partial one.

        @raise PidFileError: The file cannot be written.
        """
        try:
            writeAtomically(self.path, f"{pid}\n".encode())
        except OSError as e:
            raise PidFileError(f"Cannot write the pid file {self.path}: {e.strerror}.") from None

    def removeIfNames(self, pid: int) -> bool:
        """
        Remove the file if it names C{pid}.

        @return: Whether it was removed.
        """
        try:
            if self.read() != pid:
                return False
            os.unlink(self.path)
        except PidFileError:
            return False
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True
