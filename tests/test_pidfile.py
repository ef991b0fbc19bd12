"""
Tests for L{twisted_graceful._pidfile}.
"""

from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import PidFileError
from twisted_graceful._pidfile import PidFile


class PidFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.alive = {111}
        self.pidfile = PidFile(self.path, isAlive=lambda pid: pid in self.alive)

    def test_writeAtomically(self) -> None:
        self.pidfile.write(222)
        self.assertEqual(self.pidfile.read(), 222)
        self.assertEqual(os.listdir(os.path.dirname(self.path)), [os.path.basename(self.path)])

    def test_refusesLiveOther(self) -> None:
        """
        A pid file naming another live process stops the start, with the
        way to restart it instead.
        """
        self.pidfile.write(111)
        with self.assertRaises(PidFileError) as caught:
            self.pidfile.checkStart()
        self.assertIn("kill -USR2 111", str(caught.exception))

    def test_allowsParent(self) -> None:
        """
        A successor starts although the file names its live parent.
        """
        self.pidfile.write(111)
        self.pidfile.checkStart(allowed=111)

    def test_staleAllowed(self) -> None:
        self.pidfile.write(333)
        self.pidfile.checkStart()

    def test_removeOnlyOwn(self) -> None:
        """
        A process removes the file only while it names it: an old process
        never removes its successor's.
        """
        self.pidfile.write(222)
        self.assertFalse(self.pidfile.removeIfNames(111))
        self.assertTrue(os.path.exists(self.path))
        self.assertTrue(self.pidfile.removeIfNames(222))
        self.assertFalse(os.path.exists(self.path))
        self.assertFalse(self.pidfile.removeIfNames(222))

    @settings(max_examples=50)
    @given(st.binary(max_size=30))
    def test_garbage(self, content: bytes) -> None:
        """
        Any content either reads as a positive pid or raises L{PidFileError};
        starting over garbage is allowed.
        """
        with open(self.path, "wb") as f:
            f.write(content)
        try:
            pid = self.pidfile.read()
        except PidFileError as e:
            self.assertIn(self.path, str(e))
        else:
            self.assertTrue(pid is not None and pid > 0)
        if content.strip() != b"111":
            self.pidfile.checkStart()
