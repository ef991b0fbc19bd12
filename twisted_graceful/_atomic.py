# -*- test-case-name: tests.test_atomic -*-
"""
Replace a file atomically: readers see the old content or the new, never a
partial one, and nobody can steer the write elsewhere.

The new content goes to a temporary file in the same directory, created
with C{tempfile.mkstemp} (C{O_CREAT|O_EXCL|O_NOFOLLOW} and an unpredictable
name, so a file or symbolic link planted in advance is never written
through), flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable

DEFAULT_MODE = 0o644


def writeAtomically(
    path: str,
    data: bytes,
    mode: int = DEFAULT_MODE,
    fsync: Callable[[int], None] = os.fsync,
) -> None:
    """
    Make C{path} hold C{data}.

    @param mode: The file's permissions (readable by all by default, so that
        another user's C{twisted-graceful status} can read it).
    @param fsync: Flushes a descriptor to disk (C{os.fsync}).
    @raise OSError: The file cannot be written; no temporary file is left.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        dirFD = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        fsync(dirFD)  # The rename itself survives a crash.
    except OSError:
        pass
    finally:
        os.close(dirFD)
