"""
Tests for L{twisted_graceful.jsonlog} and L{twisted_graceful._logfile}.
"""

from __future__ import annotations

import io
import json
import os

from twisted.logger import Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import _logfile, jsonlog


class ObserverTests(SynchronousTestCase):
    def emit(self, observer: object) -> None:
        publisher = LogPublisher(observer)  # type: ignore[arg-type]
        Logger(namespace="t", observer=publisher).info("hello {who}", who="world", phase="x")

    def test_jsonLineWithPid(self) -> None:
        out = io.StringIO()
        self.emit(jsonlog.observer(out))
        event = json.loads(out.getvalue().strip("\x1e\n"))
        self.assertEqual((event["pid"], event["who"], event["phase"]), (os.getpid(), "world", "x"))

    def test_textLineWithPid(self) -> None:
        out = io.StringIO()
        self.emit(_logfile.PidTextObserver(out))
        line = out.getvalue()
        self.assertIn(f" [pid {os.getpid()}] [t#info] hello world", line)
        self.assertTrue(line.endswith("\n"))

    def test_appendsToFile(self) -> None:
        """
        The log file is opened in append mode: two writers both land at the
        end.
        """
        path = self.mktemp()
        self.addCleanup(_logfile.configure, None)
        _logfile.configure(path)
        first, second = _logfile.observer(), _logfile.observer()
        self.emit(first)
        self.emit(second)
        self.emit(first)
        with open(path) as f:
            self.assertEqual(len(f.read().splitlines()), 3)
