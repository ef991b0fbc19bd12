# -*- test-case-name: tests.test_states -*-
"""
The values of the status file's C{state} and C{lastRestart.outcome} fields,
in one place: L{Reporter} writes them, the control command reads them, and
C{docs/operations.md} lists them.

Both are L{StrEnum}s, so a member is written to the JSON file as its value
and compares equal to the string read back.
"""

from __future__ import annotations

from enum import StrEnum


class ServerState(StrEnum):
    """
    What the process that wrote the status file is doing.
    """

    SERVING = "serving"
    """It serves (alone: its predecessor, if any, stopped accepting)."""

    UPGRADING = "upgrading"
    """It serves, and a successor it started has not reported ready yet."""

    HANDED_OVER = "handed-over"
    """Its successor is ready and serves; this process drains, and rolls back if the successor dies
    before its probation ends."""

    DRAINING = "draining"
    """It stopped accepting (or answers 503 to health checks) and drains."""

    STOPPED = "stopped"
    """The drain is over; the process is exiting or gone."""


#: The states in which a drain is in progress.
DRAINING_STATES = frozenset({ServerState.HANDED_OVER, ServerState.DRAINING})


class UpgradeOutcome(StrEnum):
    """
    How the last restart request ended (C{lastRestart.outcome}).
    """

    PENDING = "pending"
    """The successor was started and has not reported ready yet."""

    OK = "ok"
    """The successor is ready and serves."""

    FAILED = "failed"
    """The successor exited or missed its ready deadline; this process serves on."""

    QUEUED = "queued"
    """The request waits for the previous process to finish its drain; it runs then."""

    REFUSED = "refused"
    """The request was refused (another restart in progress, not ready yet)."""

    ROLLED_BACK = "rolled-back"
    """The successor died after it was ready, within its probation or while this process drained:
    this process accepts again and serves on (C{pid}, C{exitStatus}, C{served} say which, how it
    ended and how long it served)."""
