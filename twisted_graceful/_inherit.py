# -*- test-case-name: tests.test_inherit -*-
"""
The inheritance protocol between a process and the successor it starts.

The old process hands each listening socket to the successor as an open
descriptor, keyed by the socket's identity, and two pipes: I{ready}, on which
the successor reports its pid while starting and when ready, and
I{lifeline}, on which the old process says when it has stopped accepting, and
whose end of file tells the successor that the old process is gone.

The variables are read once and removed from the environment, and honoured
only by a direct child of the process they name; anything malformed is
ignored with a warning, never a crash.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any, Callable, MutableMapping

from attrs import field, frozen
from twisted.logger import Logger

ENV_SOCKETS = "TWISTED_GRACEFUL_SOCKETS"
ENV_PARENT_PID = "TWISTED_GRACEFUL_PARENT_PID"
ENV_READY_FD = "TWISTED_GRACEFUL_READY_FD"
ENV_LIFELINE_FD = "TWISTED_GRACEFUL_LIFELINE_FD"
ENV_GENERATION = "TWISTED_GRACEFUL_GENERATION"
ALL_VARIABLES = (ENV_SOCKETS, ENV_PARENT_PID, ENV_READY_FD, ENV_LIFELINE_FD, ENV_GENERATION)
FIRST_CHILD_FD = 3

_log = Logger()


def listeningFamily(fileno: int) -> socket.AddressFamily | None:
    """
    The address family of C{fileno} if it is a listening stream socket, else
    L{None}.
    """
    try:
        if not stat.S_ISSOCK(os.fstat(fileno).st_mode):
            return None
        probe = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return None
    try:
        if probe.type != socket.SOCK_STREAM:
            return None
        if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 1:
            return None
        return socket.AddressFamily(probe.family)
    except OSError:
        return None
    finally:
        probe.close()


@frozen
class Inheritance:
    """
    What a process inherited from the process that started it.

    @ivar sockets: Listening sockets by identity: C{(descriptor, family)}.
    @ivar parentPID: The pid of the process that started this one, when it
        is a restart; else L{None}.
    @ivar readyFD: The descriptor to report on, or L{None}.
    @ivar lifelineFD: The descriptor to watch, or L{None}.
    @ivar generation: 1 for a first start, one more at each restart.
    """

    sockets: dict[str, tuple[int, socket.AddressFamily]] = field(factory=dict)
    parentPID: int | None = None
    readyFD: int | None = None
    lifelineFD: int | None = None
    generation: int = 1

    @classmethod
    def fromEnvironment(
        cls,
        environ: MutableMapping[str, str],
        getppid: Callable[[], int] = os.getppid,
        familyOf: Callable[[int], socket.AddressFamily | None] = listeningFamily,
    ) -> Inheritance:
        """
        Read and remove the inheritance variables from C{environ}.

        @param getppid: Returns this process's parent pid.
        @param familyOf: Returns the family of a listening socket
            descriptor, or L{None} for anything else.
        """
        raw = {name: environ.pop(name) for name in ALL_VARIABLES if name in environ}
        if not raw:
            return cls()
        parent = _positiveInt(raw.get(ENV_PARENT_PID))
        actualParent = getppid()
        if parent is None or parent != actualParent:
            _log.warn(
                "Ignoring inherited sockets: {variable}={value!r} does not name this process's "
                "parent ({parent}); they are not meant for this process",
                variable=ENV_PARENT_PID,
                value=raw.get(ENV_PARENT_PID),
                parent=actualParent,
                phase="inherit-ignored",
            )
            return cls()
        sockets: dict[str, tuple[int, socket.AddressFamily]] = {}
        try:
            table: Any = json.loads(raw.get(ENV_SOCKETS, "{}"))
        except ValueError:
            table = None
        if not isinstance(table, dict):
            _log.warn(
                "Ignoring {variable}={value!r}: expected a JSON object of socket identities "
                "to descriptors",
                variable=ENV_SOCKETS,
                value=raw.get(ENV_SOCKETS),
                phase="inherit-ignored",
            )
            table = {}
        for identity, fileno in table.items():
            family = familyOf(fileno) if _isDescriptor(fileno) else None
            if not isinstance(identity, str) or family is None:
                _log.warn(
                    "Ignoring inherited socket {identity!r}: {fileno!r} is not a listening socket",
                    identity=identity,
                    fileno=fileno,
                    phase="inherit-ignored",
                )
                continue
            sockets[identity] = (fileno, family)
        generation = _positiveInt(raw.get(ENV_GENERATION)) or 2
        return cls(
            sockets,
            parent,
            _descriptor(raw.get(ENV_READY_FD)),
            _descriptor(raw.get(ENV_LIFELINE_FD)),
            generation,
        )


def _positiveInt(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    value = int(text)
    return value if value > 0 else None


def _isDescriptor(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= FIRST_CHILD_FD


def _descriptor(text: str | None) -> int | None:
    value = _positiveInt(text)
    return value if value is not None and value >= FIRST_CHILD_FD else None


@frozen
class Handover:
    """
    How to start a successor: its environment additions, and the
    descriptors it gets (for L{IReactorProcess.spawnProcess}'s C{childFDs}).

    @ivar readyFD: The successor's descriptor for the ready pipe.
    @ivar lifelineFD: The successor's descriptor for the lifeline.
    """

    environ: dict[str, str]
    childFDs: dict[int, int | str]
    readyFD: int
    lifelineFD: int


def encodeHandover(sockets: dict[str, int], parentPID: int, generation: int) -> Handover:
    """
    Describe a successor that inherits C{sockets} (identity to descriptor in
    this process), with its standard I/O shared with this process.
    """
    childFDs: dict[int, int | str] = {0: 0, 1: 1, 2: 2}
    table: dict[str, int] = {}
    target = FIRST_CHILD_FD
    for identity, fileno in sockets.items():
        childFDs[target] = fileno
        table[identity] = target
        target += 1
    readyFD, lifelineFD = target, target + 1
    # The letters are the old process's side: it reads the ready pipe and
    # writes the lifeline.
    childFDs[readyFD] = "r"
    childFDs[lifelineFD] = "w"
    environ = {
        ENV_SOCKETS: json.dumps(table, sort_keys=True),
        ENV_PARENT_PID: str(parentPID),
        ENV_READY_FD: str(readyFD),
        ENV_LIFELINE_FD: str(lifelineFD),
        ENV_GENERATION: str(generation + 1),
    }
    return Handover(environ, childFDs, readyFD, lifelineFD)
