# -*- test-case-name: tests.test_parent -*-
"""
L{ParentProcess}: a successor's view of the process that started it.

The successor reports C{starting} and C{ready} on the ready pipe, and
watches the lifeline: a C{handed-over} line means the old process no longer
accepts connections; end of file means the old process is gone.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._inherit import Inheritance

_log = Logger()


@implementer(IReadDescriptor)
class _Lifeline:
    """
    Reads the lifeline pipe on the reactor.
    """

    def __init__(self, fileno: int, onLine: Callable[[bytes], None], onClosed: Callable[[], None], read: Any) -> None:
        self._fileno = fileno
        self._onLine = onLine
        self._onClosed = onClosed
        self._read = read
        self._buffer = b""

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "lifeline"

    def doRead(self) -> Any:
        try:
            data = self._read(self._fileno, 4096)
        except BlockingIOError:
            return None
        except OSError as e:
            return Failure(e)
        if not data:
            return Failure(EOFError())
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                self._onLine(line)
            except Exception:
                # A failure handling one line is not the lifeline closing:
                # that would tell this process the old one is gone.
                _log.failure("Handling {line!r} from the old process failed", line=line[:200])
        return None

    def connectionLost(self, reason: Failure) -> None:
        self._onClosed()


class ParentProcess:
    """
    The old process, seen from its successor.

    @param reactor: Watches the lifeline.
    @param inheritance: What this process inherited.
    @param write: Writes to a descriptor (C{os.write}; a fake in tests).
    @param close: Closes a descriptor (C{os.close}).
    @param read: Reads from a descriptor (C{os.read}).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        inheritance: Inheritance,
        write: Callable[[int, bytes], int] = os.write,
        close: Callable[[int], None] = os.close,
        read: Callable[[int, int], bytes] = os.read,
    ) -> None:
        self._reactor = reactor
        self.pid = inheritance.parentPID
        self._readyFD = inheritance.readyFD
        self._lifelineFD = inheritance.lifelineFD
        self._write = write
        self._close = close
        self._read = read
        self._lifeline: _Lifeline | None = None

    def announce(self, state: str, **fields: Any) -> None:
        """
        Report C{state} (C{starting} or C{ready}) with this process's pid.
        After C{ready} the ready pipe is closed.
        """
        if self._readyFD is None:
            return
        message = json.dumps(dict(fields, state=state, pid=os.getpid()), sort_keys=True).encode() + b"\n"
        try:
            self._write(self._readyFD, message)
        except OSError as e:
            self._log.warn("Cannot report {state} to the old process: {error}", state=state, error=str(e))
        if state == "ready":
            self._close(self._readyFD)
            self._readyFD = None

    def poll(self) -> None:
        """
        Read the lifeline now, without waiting for the reactor: news that
        is already there (the old process exited) is delivered at once.
        """
        if self._lifeline is None:
            return
        why = self._lifeline.doRead()
        if why is not None:
            self._reactor.removeReader(self._lifeline)
            self._lifeline.connectionLost(why)

    def watch(self, onHandedOver: Callable[[], None], onGone: Callable[[], None]) -> None:
        """
        Call C{onHandedOver} when the old process says it stopped accepting,
        and C{onGone} when it has exited.  With no lifeline (a first start),
        C{onGone} is called at once.
        """
        if self._lifelineFD is None:
            onGone()
            return
        os.set_blocking(self._lifelineFD, False)

        def line(data: bytes) -> None:
            try:
                state = json.loads(data).get("state")
            except (ValueError, AttributeError):
                return
            if state == "handed-over":
                onHandedOver()

        def closed() -> None:
            if self._lifelineFD is None:
                return
            self._reactor.removeReader(self._lifeline)  # type: ignore[arg-type]
            self._close(self._lifelineFD)
            self._lifelineFD = None
            self._lifeline = None
            onGone()

        self._lifeline = _Lifeline(self._lifelineFD, line, closed, self._read)
        self._reactor.addReader(self._lifeline)
