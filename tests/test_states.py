"""
Tests for L{twisted_graceful._states}.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._drain import DrainResult
from twisted_graceful._notify import Notifier
from twisted_graceful._report import Reporter
from twisted_graceful._states import DRAINING_STATES, ServerState, UpgradeOutcome
from twisted_graceful._status import StatusFile, readStatus

RESTART = Path(__file__).parents[1] / "docs" / "restart.md"


class RecordingStatusFile(StatusFile):
    """
    A status file that keeps every version it wrote, as read back.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.written: list[dict[str, Any]] = []

    def update(self, **changes: Any) -> None:
        super().update(**changes)
        status = readStatus(self.path)
        assert status is not None
        self.written.append(status)


class StatesTests(SynchronousTestCase):
    def test_reporterWritesEveryStateAndNoOther(self) -> None:
        """
        Through a whole life (serve, a refused, a queued, a failed and a
        rolled-back and a successful restart, a drain, the stop), the status file holds exactly the
        states of L{ServerState} and the outcomes of L{UpgradeOutcome}.
        """
        status = RecordingStatusFile("app.pid.status")
        reporter = Reporter(status, Notifier({}))
        reporter.serving(1, {"8080": "0.0.0.0:8080"}, 0.0)
        reporter.refused(reporter.restartRequested(), "a restart is in progress")
        reporter.queued(reporter.restartRequested())
        attempt = reporter.restartRequested()
        reporter.upgrading(attempt)
        reporter.upgradeFailed(attempt, "the successor exited")
        attempt = reporter.restartRequested()
        reporter.upgrading(attempt)
        reporter.handedOver(attempt, 4242)
        reporter.rolledBack(attempt, 4242, "exit status 1", 1.5)
        reporter.draining(0.0)
        reporter.stopped([DrainResult("8080", 0, 0, 0, 0, 0, 0.0)])
        states = {s["state"] for s in status.written}
        outcomes = {s["lastRestart"]["outcome"] for s in status.written if s.get("lastRestart")}
        self.assertEqual(states, {str(s) for s in ServerState})
        self.assertEqual(outcomes, {str(o) for o in UpgradeOutcome})

    def test_silentAfterHandOver(self) -> None:
        """
        Once handed over, the status file is the successor's: a restart
        refused during the probation does not overwrite it; a rollback
        writes it again.
        """
        status = RecordingStatusFile("app.pid.status")
        reporter = Reporter(status, Notifier({}))
        reporter.serving(1, {}, 0.0)
        attempt = reporter.restartRequested()
        reporter.handedOver(attempt, 4242)
        written = len(status.written)
        reporter.refused(reporter.restartRequested(), "a restart is in progress")
        reporter.draining(0.0)
        self.assertEqual(len(status.written), written)
        reporter.rolledBack(attempt, 4242, "exit status 1", 1.5)
        self.assertEqual(status.written[-1]["lastRestart"]["outcome"], "rolled-back")

    def test_readBackEqual(self) -> None:
        """
        A member is written as its value and equals the string read back.
        """
        self.assertEqual(json.loads(json.dumps({"state": ServerState.HANDED_OVER})), {"state": "handed-over"})
        self.assertEqual("handed-over", ServerState.HANDED_OVER)
        self.assertIn("draining", DRAINING_STATES)
        self.assertNotIn("serving", DRAINING_STATES)

    def test_documented(self) -> None:
        """
        The restart guide's table lists every state, in order, and its text
        every outcome.
        """
        text = RESTART.read_text()
        section = text[text.index("## The status file"):]
        section = section[: section.index("\n## ", 1)]
        rows = re.findall(r"^\| `([a-z-]+)` \|", section, re.MULTILINE)
        self.assertEqual(rows, ["state", *[str(s) for s in ServerState]])
        self.assertLessEqual({str(o) for o in UpgradeOutcome}, set(re.findall(r"`([a-z-]+)`", section)))
