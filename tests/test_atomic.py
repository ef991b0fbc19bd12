"""
Tests for L{twisted_graceful._atomic}, and the pid and status files that
use it.
"""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._atomic import writeAtomically
from twisted_graceful._pidfile import PidFile
from twisted_graceful._status import StatusFile, readStatus


class WriteAtomicallyTests(SynchronousTestCase):
    def test_replaces(self) -> None:
        """
        The file holds the new content, readable by all, flushed to disk
        (the file, then its directory), and no temporary file is left.
        """
        synced: list[int] = []
        writeAtomically("app.pid", b"old")
        writeAtomically("app.pid", b"new", fsync=synced.append)
        with open("app.pid", "rb") as f:
            self.assertEqual(f.read(), b"new")
        self.assertEqual(stat.S_IMODE(os.stat("app.pid").st_mode), 0o644)
        self.assertEqual(os.listdir("."), ["app.pid"])
        self.assertEqual(len(synced), 2)

    def test_failureLeavesNothing(self) -> None:
        """
        A write that fails (here the target is a directory) raises and
        leaves no temporary file.
        """
        os.mkdir("app.pid")
        self.assertRaises(OSError, writeAtomically, "app.pid", b"1")
        self.assertEqual(os.listdir("."), ["app.pid"])
        self.assertEqual(os.listdir("app.pid"), [])

    def test_fsyncFails(self) -> None:
        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        writeAtomically("app.pid", b"old")
        self.assertRaises(OSError, writeAtomically, "app.pid", b"new", fsync=failing)
        with open("app.pid", "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(os.listdir("."), ["app.pid"])


class PlantedTemporaryTests(SynchronousTestCase):
    """
    A file or symbolic link planted where a predictable temporary name
    would be (C{app.pid.PID.tmp}, C{app.pid.status.PID.tmp}) is never
    written through nor renamed into place.
    """

    def plant(self, name: str) -> None:
        with open("precious", "w") as f:
            f.write("precious")
        os.symlink("precious", name)

    def assertUntouched(self, name: str) -> None:
        with open("precious") as f:
            self.assertEqual(f.read(), "precious")
        self.assertTrue(os.path.islink(name))

    def test_pidFile(self) -> None:
        self.plant("app.pid.222.tmp")
        PidFile("app.pid").write(222)
        self.assertUntouched("app.pid.222.tmp")
        self.assertFalse(os.path.islink("app.pid"))
        self.assertEqual(PidFile("app.pid").read(), 222)

    def test_statusFile(self) -> None:
        name = f"app.pid.status.{os.getpid()}.tmp"
        self.plant(name)
        StatusFile("app.pid.status").update(pid=1)
        self.assertUntouched(name)
        self.assertFalse(os.path.islink("app.pid.status"))
        self.assertEqual(readStatus("app.pid.status"), {"pid": 1})
