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
ignored with a warning, never a crash.  Without both pipes (a variable that
is not a number, a descriptor that is closed or is not a pipe of the right
direction) nothing is inherited and the process starts as a fresh server.
A socket is taken only if it is a listening socket bound to the address its
identity names.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
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
ENV_HANDOFF_FD = "TWISTED_GRACEFUL_HANDOFF_FD"
ALL_VARIABLES = (ENV_SOCKETS, ENV_PARENT_PID, ENV_READY_FD, ENV_LIFELINE_FD, ENV_GENERATION, ENV_HANDOFF_FD)
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


def socketIdentity(fileno: int) -> str | None:
    """
    The identity of the address the listening socket C{fileno} is bound to
    (C{tcp:8080:interface=127.0.0.1}, C{tcp6:...}, C{unix:/path}), or
    L{None}.
    """
    family = listeningFamily(fileno)
    if family is None:
        return None
    probe = socket.socket(fileno=os.dup(fileno))
    try:
        address = probe.getsockname()
    except OSError:
        return None
    finally:
        probe.close()
    if family == socket.AF_INET:
        return f"tcp:{address[1]}:interface={address[0]}"
    if family == socket.AF_INET6:
        return f"tcp6:{address[1]}:interface={address[0]}"
    if family == socket.AF_UNIX and isinstance(address, str) and address:
        return f"unix:{os.path.abspath(address)}"
    return None


def identityMatches(announced: str, bound: str | None) -> bool:
    """
    Whether a socket bound to C{bound} (from L{socketIdentity}) may serve
    the endpoint identity C{announced}: the same address, or the same
    interface when C{announced} asks for any port (C{tcp:0:...}).  A
    C{systemd:} identity names a socket by name, not address: it matches
    any.
    """
    if announced.startswith("systemd:"):
        return True
    if bound is None:
        return False
    if announced == bound:
        return True
    scheme, _, rest = announced.partition(":")
    port, _, interface = rest.partition(":")
    boundScheme, _, boundRest = bound.partition(":")
    _, _, boundInterface = boundRest.partition(":")
    return scheme in ("tcp", "tcp6") and scheme == boundScheme and port == "0" and interface == boundInterface


def pipeDirection(fileno: int) -> str | None:
    """
    C{"r"} or C{"w"} for the read or write end of a pipe inherited through
    C{exec}; L{None} for a closed descriptor, anything else, or a pipe this
    process made itself (such as the reactor's waker): Python and Twisted
    open every descriptor close-on-exec, so one that is not was inherited.
    """
    try:
        if not stat.S_ISFIFO(os.fstat(fileno).st_mode) or not os.get_inheritable(fileno):
            return None
        mode = fcntl.fcntl(fileno, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return None
    return {os.O_RDONLY: "r", os.O_WRONLY: "w"}.get(mode)


def isHandoffChannel(fileno: int) -> bool:
    """
    Whether C{fileno} is an inherited UNIX C{SOCK_SEQPACKET} socket: the
    successor's end of a hand-off channel
    (L{twisted_graceful._handoff.makeChannel}).
    """
    try:
        if not stat.S_ISSOCK(os.fstat(fileno).st_mode) or not os.get_inheritable(fileno):
            return False
        probe = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return False
    try:
        return probe.family == socket.AF_UNIX and probe.type == socket.SOCK_SEQPACKET
    finally:
        probe.close()


def writerGone(fileno: int) -> bool:
    """
    Whether every writer of the pipe C{fileno} has closed it (the old
    process has exited), whatever data is still in it.
    """
    poller = select.poll()
    try:
        poller.register(fileno, select.POLLIN)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    return any(mask & select.POLLHUP for _, mask in events)


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
    @ivar refused: Listening sockets announced under an identity they are
        not bound to: not served, to be closed.
    @ivar handoffFD: The successor's end of the hand-off channel, on which
        the old process passes kept-alive connections, or L{None}.
    """

    sockets: dict[str, tuple[int, socket.AddressFamily]] = field(factory=dict)
    parentPID: int | None = None
    readyFD: int | None = None
    lifelineFD: int | None = None
    generation: int = 1
    refused: tuple[int, ...] = ()
    handoffFD: int | None = None

    @classmethod
    def fromEnvironment(
        cls,
        environ: MutableMapping[str, str],
        getppid: Callable[[], int] = os.getppid,
        familyOf: Callable[[int], socket.AddressFamily | None] = listeningFamily,
        identify: Callable[[int], str | None] = socketIdentity,
        pipeOf: Callable[[int], str | None] = pipeDirection,
        parentExited: Callable[[int], bool] = writerGone,
        channelOf: Callable[[int], bool] = isHandoffChannel,
    ) -> Inheritance:
        """
        Read and remove the inheritance variables from C{environ}.

        @param getppid: Returns this process's parent pid.
        @param familyOf: Returns the family of a listening socket
            descriptor, or L{None} for anything else.
        @param identify: Returns the identity of the address a listening
            socket is bound to (L{socketIdentity}).
        @param pipeOf: Returns the direction of a pipe descriptor
            (L{pipeDirection}).
        @param parentExited: Tells from the lifeline whether the old process
            has exited (L{writerGone}).  A process whose parent died while it
            started has another parent pid by then; the lifeline says why.
        @param channelOf: Tells whether a descriptor is a hand-off channel
            (L{isHandoffChannel}).
        """
        raw = {name: environ.pop(name) for name in ALL_VARIABLES if name in environ}
        if not raw:
            return cls()
        parent = _positiveInt(raw.get(ENV_PARENT_PID))
        actualParent = getppid()
        readyFD, lifelineFD = _descriptor(raw.get(ENV_READY_FD)), _descriptor(raw.get(ENV_LIFELINE_FD))
        if parent is not None and parent != actualParent and lifelineFD is not None and (
            pipeOf(lifelineFD) == "r" and parentExited(lifelineFD)
        ):
            # The old process died while this one started: nothing else
            # holds its sockets now, so take them rather than fail to bind.
            _log.warn(
                "The previous process {parentPID} exited before this one was ready: taking over "
                "its sockets",
                parentPID=parent,
                phase="parent-gone-early",
            )
        elif parent is None or parent != actualParent:
            _log.warn(
                "Ignoring inherited sockets: {variable}={value!r} does not name this process's "
                "parent ({parent}); they are not meant for this process",
                variable=ENV_PARENT_PID,
                value=raw.get(ENV_PARENT_PID),
                parent=actualParent,
                phase="inherit-ignored",
            )
            return cls()
        for variable, fileno, direction in [(ENV_READY_FD, readyFD, "w"), (ENV_LIFELINE_FD, lifelineFD, "r")]:
            if fileno is None or fileno == (lifelineFD if variable == ENV_READY_FD else readyFD) or (
                pipeOf(fileno) != direction
            ):
                _log.warn(
                    "Ignoring the inherited sockets: {variable}={value!r} is not an open pipe to the "
                    "previous process; starting as a fresh server",
                    variable=variable,
                    value=raw.get(variable),
                    phase="inherit-ignored",
                )
                return cls()
        sockets: dict[str, tuple[int, socket.AddressFamily]] = {}
        refused: list[int] = []
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
            if fileno in (readyFD, lifelineFD):
                continue  # Reported as a pipe: not a socket.
            bound = identify(fileno)
            if not identityMatches(identity, bound):
                _log.warn(
                    "Refusing inherited socket {identity!r}: descriptor {fileno} is bound to {bound}, "
                    "not to that address",
                    identity=identity,
                    fileno=fileno,
                    bound=bound,
                    phase="inherit-ignored",
                )
                refused.append(fileno)
                continue
            sockets[identity] = (fileno, family)
        generation = _positiveInt(raw.get(ENV_GENERATION)) or 2
        handoffFD = _descriptor(raw.get(ENV_HANDOFF_FD))
        if ENV_HANDOFF_FD in raw and (
            handoffFD is None
            or handoffFD in (readyFD, lifelineFD)
            or any(handoffFD == f for f, _ in sockets.values())
            or not channelOf(handoffFD)
        ):
            _log.warn(
                "Ignoring {variable}={value!r}: not an inherited hand-off channel; kept-alive "
                "connections of the previous process will not move to this one",
                variable=ENV_HANDOFF_FD,
                value=raw.get(ENV_HANDOFF_FD),
                phase="inherit-ignored",
            )
            handoffFD = None
        return cls(sockets, parent, readyFD, lifelineFD, generation, tuple(refused), handoffFD)


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
    @ivar handoffFD: The successor's descriptor for the hand-off channel, or
        L{None}.
    """

    environ: dict[str, str]
    childFDs: dict[int, int | str]
    readyFD: int
    lifelineFD: int
    handoffFD: int | None = None


def encodeHandover(
    sockets: dict[str, int], parentPID: int, generation: int, handoff: int | None = None
) -> Handover:
    """
    Describe a successor that inherits C{sockets} (identity to descriptor in
    this process), with its standard I/O shared with this process.

    @param handoff: This process's descriptor of the successor's end of a
        hand-off channel, or L{None} for none.
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
    handoffFD = None
    if handoff is not None:
        handoffFD = lifelineFD + 1
        childFDs[handoffFD] = handoff
        environ[ENV_HANDOFF_FD] = str(handoffFD)
    return Handover(environ, childFDs, readyFD, lifelineFD, handoffFD)
