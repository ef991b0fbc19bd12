"""
Tests for L{twisted_graceful._control}.
"""

from __future__ import annotations

import os

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import _control
from twisted_graceful._status import StatusFile


class FindServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.pidfile = os.path.join(self.dir, "app.pid")

    def test_ours(self) -> None:
        """
        A pid file naming a live process that its status file also names is
        a server.
        """
        with open(self.pidfile, "w") as f:
            f.write(str(os.getpid()))
        StatusFile(self.pidfile + ".status").update(pid=os.getpid(), state="serving")
        pid, status = _control.findServer(self.pidfile)
        self.assertEqual((pid, status["state"]), (os.getpid(), "serving"))

    def test_statusNamesAnother(self) -> None:
        with open(self.pidfile, "w") as f:
            f.write(str(os.getpid()))
        StatusFile(self.pidfile + ".status").update(pid=1, state="serving")
        with self.assertRaises(_control.ControlError) as caught:
            _control.findServer(self.pidfile)
        self.assertEqual(caught.exception.status, _control.NO_SERVER)


class ArgumentTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.one_of(st.sampled_from(["reload", "stop", "status", "--pidfile", "--timeout",
                                               "--signal", "-1", "0", "abc", "USR2", "KILL9", "--help"]),
                              st.text(max_size=8)), max_size=5))
    def test_anyArguments(self, argv: list[str]) -> None:
        """
        Whatever the arguments, the command answers with an exit status (2
        for bad arguments), never a traceback.
        """
        argv = [a for a in argv if a not in ("--help", "-h") and not a.startswith("-h")]
        try:
            code = _control.main(["status", "--pidfile", os.path.join(self.mktemp(), "none.pid")] if not argv else argv)
        except SystemExit as e:
            self.assertIn(e.code, (0, 2))
        else:
            self.assertIn(code, (_control.OK, _control.FAILED, _control.NO_SERVER, _control.TIMEOUT))
