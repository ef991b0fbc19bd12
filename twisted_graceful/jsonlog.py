# -*- test-case-name: tests.test_jsonlog -*-
"""
JSON log events on standard output, one per line, for log shippers and for
tests: C{twistd --logger=twisted_graceful.jsonlog.observer -n graceful ...}.

Every event carries the C{pid} of the process that emitted it, so the two
processes of a restart can be told apart in one stream.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from twisted.logger import ILogObserver, LogEvent, jsonFileLogObserver
from zope.interface import implementer


@implementer(ILogObserver)
class _WithPid:
    def __init__(self, observer: ILogObserver) -> None:
        self._observer = observer

    def __call__(self, event: LogEvent) -> None:
        if "pid" not in event:
            event = dict(event, pid=os.getpid())
        self._observer(event)


def observer(outFile: IO[str] | None = None) -> ILogObserver:
    """
    A log observer writing each event as a line of JSON (after an ASCII
    record separator, as L{jsonFileLogObserver} does) to C{outFile},
    standard output by default.
    """
    return _WithPid(jsonFileLogObserver(outFile if outFile is not None else sys.stdout))
