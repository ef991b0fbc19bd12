"""
Tests for L{twisted_graceful._parent}.
"""

from __future__ import annotations

import json
import os

from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._inherit import Inheritance
from twisted_graceful._parent import ParentProcess


class FakeFDs:
    def __init__(self) -> None:
        self.written: dict[int, bytes] = {}
        self.closed: list[int] = []
        self.toRead: list[bytes] = []

    def write(self, fd: int, data: bytes) -> int:
        if fd in self.closed:
            raise OSError(9, "Bad file descriptor")
        self.written[fd] = self.written.get(fd, b"") + data
        return len(data)

    def close(self, fd: int) -> None:
        self.closed.append(fd)

    def read(self, fd: int, size: int) -> bytes:
        return self.toRead.pop(0)


class ParentProcessTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fds = FakeFDs()
        self.reactor = MemoryReactor()
        self.patch(os, "set_blocking", lambda fd, flag: None)
        self.parent = ParentProcess(
            self.reactor, Inheritance({}, 77, 5, 6, 2), self.fds.write, self.fds.close, self.fds.read  # type: ignore[arg-type]
        )

    def test_announce(self) -> None:
        """
        C{starting} and C{ready} are JSON lines with this pid; the ready pipe
        closes after C{ready}, and later announcements are dropped.
        """
        self.parent.announce("starting", generation=2)
        self.parent.announce("ready", generation=2)
        self.parent.announce("ready")
        lines = [json.loads(line) for line in self.fds.written[5].splitlines()]
        self.assertEqual([l["state"] for l in lines], ["starting", "ready"])
        self.assertEqual(lines[0]["pid"], os.getpid())
        self.assertEqual(self.fds.closed, [5])

    def test_watch(self) -> None:
        """
        A C{handed-over} line, then end of file, are reported in order.
        """
        seen: list[str] = []
        self.parent.watch(lambda: seen.append("handed-over"), lambda: seen.append("gone"))
        [reader] = self.reactor.readers
        self.fds.toRead = [b'{"state": "hand', b'ed-over"}\nnoise\n', b""]
        reader.doRead()
        reader.doRead()
        self.assertEqual(seen, ["handed-over"])
        why = reader.doRead()
        self.assertIsInstance(why, Failure)
        reader.connectionLost(why)
        self.assertEqual(seen, ["handed-over", "gone"])
        self.assertIn(6, self.fds.closed)

    def test_pollDeliversEndOfFile(self) -> None:
        """
        L{ParentProcess.poll} delivers an end of file already waiting, once.
        """
        seen: list[str] = []
        self.parent.watch(lambda: seen.append("handed-over"), lambda: seen.append("gone"))
        self.fds.toRead = [b""]
        self.parent.poll()
        self.parent.poll()
        self.assertEqual(seen, ["gone"])
        self.assertEqual(self.reactor.readers, set())

    def test_pollNothingYet(self) -> None:
        seen: list[str] = []
        self.parent.watch(lambda: seen.append("handed-over"), lambda: seen.append("gone"))

        def wouldBlock(fd: int, size: int) -> bytes:
            raise BlockingIOError()

        self.fds.read = wouldBlock  # type: ignore[method-assign]
        self.parent._read = wouldBlock  # type: ignore[assignment]
        self.parent._lifeline._read = wouldBlock  # type: ignore[union-attr]
        self.parent.poll()
        self.assertEqual(seen, [])

    def test_noParent(self) -> None:
        """
        A first start has no lifeline: it serves alone at once.
        """
        parent = ParentProcess(self.reactor, Inheritance(), self.fds.write, self.fds.close, self.fds.read)  # type: ignore[arg-type]
        seen: list[str] = []
        parent.watch(lambda: seen.append("handed-over"), lambda: seen.append("gone"))
        parent.announce("ready")
        self.assertEqual((seen, self.fds.written), (["gone"], {}))

    def test_handlerFailureIsNotParentGone(self) -> None:
        """
        A failure while handling the C{handed-over} line is logged; it is
        not taken for the lifeline closing, so the old process is not
        declared gone while it still drains.
        """
        seen: list[str] = []

        def failing() -> None:
            seen.append("handed-over")
            raise OSError(30, "Read-only file system")

        self.parent.watch(failing, lambda: seen.append("gone"))
        [reader] = self.reactor.readers
        self.fds.toRead = [b'{"state": "handed-over"}\n']
        self.assertIsNone(reader.doRead())
        self.assertEqual(seen, ["handed-over"])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(self.reactor.readers, {reader})
