# -*- test-case-name: tests.test_workers -*-
"""
The protocol between the supervisor and each worker it starts.

A worker runs the same command as the supervisor, in a fresh interpreter,
with C{TWISTED_GRACEFUL_WORKER} in its environment: a JSON object holding
the worker's number, its generation, and the inheritance of
L{twisted_graceful._inherit} (listening sockets by identity, a I{ready} pipe
and a I{lifeline}).  The worker adopts every socket and never binds one; it
reports C{ready} on the ready pipe once it serves, then, every
L{STATS_INTERVAL} seconds, C{stats} (requests served, resident memory).  The
supervisor closes the lifeline to ask the worker to drain and exit, and a
worker whose supervisor died sees the same end of file, so it never serves
orphaned.
"""

from __future__ import annotations

import json
import os
import signal
from functools import partial
from typing import Any, Callable, Iterable, MutableMapping

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.server import Site

from ._errors import ListenFailed
from ._handoff import HandoffReceiver, HandoffSender
from ._inherit import ALL_VARIABLES, ENV_PARENT_PID, Handover, Inheritance, isHandoffChannel
from ._movable import EndpointMover
from ._site import adopterFor

ENV_WORKER = "TWISTED_GRACEFUL_WORKER"
STATS_INTERVAL = 1.0
NOT_FOR_WORKERS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", *ALL_VARIABLES)
"""
Variables a worker must not see: systemd speaks to the supervisor only, and
a worker is nobody's successor.
"""


def workerEnvironment(
    environ: MutableMapping[str, str],
    handover: Handover,
    index: int,
    generation: int,
    channels: tuple[int, int] | None = None,
    forkServer: int | None = None,
) -> dict[str, str]:
    """
    The environment of a worker: C{environ} without what is meant for the
    supervisor alone, with the worker's inheritance.

    @param channels: The worker's descriptors of its hand-off channels
        (I{up}, I{down}; see L{twisted_graceful._broker}), or L{None}.
    @param forkServer: The pid of the fork server, which may be the
        worker's parent instead of the supervisor.
    """
    env = {k: v for k, v in environ.items() if k not in NOT_FOR_WORKERS}
    data: dict[str, Any] = {"worker": index, "generation": generation, "inherit": handover.environ}
    if channels is not None:
        data["channels"] = list(channels)
    if forkServer is not None:
        data["forkServer"] = forkServer
    env[ENV_WORKER] = json.dumps(data, sort_keys=True)
    return env


def workerCommand(argv: list[str], ignored: Iterable[int]) -> list[str]:
    """
    The command that starts a worker: C{argv}, through a shell that ignores
    the signals in C{ignored} (SIG_IGN survives C{exec}), so that a SIGHUP
    or SIGUSR2 meant for the supervisor (a terminal's hang-up reaches the
    whole process group) never kills a worker.
    """
    numbers = " ".join(str(int(s)) for s in sorted(set(ignored)))
    return ["/bin/sh", "-c", f'trap "" {numbers}; exec "$0" "$@"', *argv]


@frozen
class WorkerInheritance:
    """
    What a worker was given by its supervisor.

    @ivar index: The worker's number, from 1.
    @ivar generation: The pool's generation when it was started.
    @ivar inheritance: Its sockets and pipes, checked as a successor's are.
    @ivar channels: Its hand-off channels (I{up}, I{down}), or L{None}.
    """

    index: int
    generation: int
    inheritance: Inheritance
    channels: tuple[int, int] | None = None

    @classmethod
    def fromEnvironment(
        cls, environ: MutableMapping[str, str], **checks: Callable[..., Any]
    ) -> WorkerInheritance | None:
        """
        Read and remove C{TWISTED_GRACEFUL_WORKER} from C{environ}.

        @param checks: Passed to L{Inheritance.fromEnvironment} (fakes in
            tests).
        @return: L{None} when this process is not a worker.
        @raise ListenFailed: The variable is there but malformed, or names
            no usable pipes: the worker cannot serve.
        """
        raw = environ.pop(ENV_WORKER, None)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            index, generation, inherit = int(data["worker"]), int(data["generation"]), dict(data["inherit"])
        except (ValueError, KeyError, TypeError):
            raise ListenFailed(
                f"{ENV_WORKER}={raw[:200]!r} is malformed: a worker is started by its supervisor "
                "(twistd graceful --workers N); do not set this variable yourself."
            ) from None
        forkServer = data.get("forkServer")
        if isinstance(forkServer, int) and "getppid" not in checks:
            # Forked by the fork server: the supervisor is its parent's parent.
            checks["getppid"] = partial(_parentOrSupervisor, forkServer, inherit.get(ENV_PARENT_PID))
        inheritance = Inheritance.fromEnvironment({k: str(v) for k, v in inherit.items()}, **checks)
        if inheritance.readyFD is None or inheritance.lifelineFD is None:
            raise ListenFailed(
                "This worker cannot reach its supervisor (its pipes are not open): it was not "
                "started by twistd graceful --workers, or the supervisor is gone."
            )
        return cls(index, generation, inheritance, _channels(data.get("channels"), checks.get("channelOf")))


def reportFailure(given: WorkerInheritance, reason: str, write: Callable[[int, bytes], int] = os.write) -> None:
    """
    Tell the supervisor why this worker cannot start (the application did
    not load), before it exits: the rollout's outcome then says why.
    """
    readyFD = given.inheritance.readyFD
    if readyFD is None:
        return
    line = json.dumps({"state": "failed", "reason": reason[:2000], "pid": os.getpid()}).encode() + b"\n"
    try:
        write(readyFD, line)
    except OSError:
        pass  # The supervisor is gone, or not reading: the exit status says the rest.


def _parentOrSupervisor(forkServer: int, supervisor: object) -> int | None:
    """
    This process's parent, or the supervisor if the parent is its fork
    server.
    """
    parent = os.getppid()
    if parent == forkServer and isinstance(supervisor, (int, str)) and str(supervisor).isdigit():
        return int(supervisor)
    return parent


def _channels(value: object, channelOf: Callable[[int], bool] | None) -> tuple[int, int] | None:
    """
    The worker's hand-off channels from C{value}, if it names two of them.
    """
    if value is None:
        return None
    check = channelOf if channelOf is not None else isHandoffChannel
    if (
        isinstance(value, list) and len(value) == 2
        and all(isinstance(f, int) and not isinstance(f, bool) and f > 2 and check(f) for f in value)
        and value[0] != value[1]
    ):
        return value[0], value[1]
    _log.warn(
        "Ignoring the worker's hand-off channels {value!r}: not two inherited channels; its kept-alive "
        "connections will be closed at a restart, not moved",
        value=value,
        phase="inherit-ignored",
    )
    return None


_log = Logger()


def countRequests(site: Site, counter: list[int]) -> None:
    """
    Count each request C{site} receives in C{counter[0]}.
    """
    factory = site.requestFactory

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return factory(*args, **kwargs)

    site.requestFactory = counting  # type: ignore[assignment]


def residentMemory(pid: int | str = "self") -> int | None:
    """
    The resident memory of a process in bytes, from C{/proc}, or L{None}.
    """
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@define(slots=False, eq=False)
class WorkerLink(Service):
    """
    The worker's side: adopt the sockets, report ready and stats, and stop
    when the lifeline closes.

    @ivar given: What the supervisor gave this worker.
    @ivar reactor: The reactor (reads the lifeline, stops).
    @ivar requests: C{[count]} of requests served, kept by L{countRequests}.
    """

    given: WorkerInheritance
    reactor: Any
    requests: list[int] = field(factory=lambda: [0])
    _write: Callable[[int, bytes], int] = os.write
    _close: Callable[[int], None] = os.close
    _read: Callable[[int, int], bytes] = os.read
    _setBlocking: Callable[[int, bool], None] = os.set_blocking
    _memory: Callable[[], int | None] = residentMemory
    _signal: Callable[[int, Any], Any] = signal.signal
    _stats: IDelayedCall | None = field(default=None, init=False)
    _lifeline: Any = field(default=None, init=False)
    _endpoints: list[Any] = field(factory=list, init=False)
    _sender: HandoffSender | None = field(default=None, init=False)
    _receiver: HandoffReceiver | None = field(default=None, init=False)
    _log = Logger()

    def __attrs_post_init__(self) -> None:
        Service.__init__(self)

    def adopt(self, endpoints: Iterable[Any]) -> None:
        """
        Give each endpoint the socket the supervisor passed for its identity.

        @raise ListenFailed: The supervisor passed no socket for one of them.
        """
        sockets = self.given.inheritance.sockets
        self._endpoints = list(endpoints)
        for endpoint in self._endpoints:
            passed = sockets.get(endpoint.identity)
            if passed is None or passed[1] != endpoint.address.family:
                raise ListenFailed(
                    f"Worker {self.given.index}: the supervisor passed no socket for "
                    f"{endpoint.address.description}. A worker runs the supervisor's own command; "
                    "start the supervisor again."
                )
            endpoint.inheritedFileno = passed[0]

    def startService(self) -> None:
        super().startService()
        # After the service's own start-up work, which also runs when the
        # reactor starts: ready means serving, with its signal handlers.
        self.reactor.callWhenRunning(self.reactor.callLater, 0, self._ready)

    def _ready(self) -> None:
        readyFD = self.given.inheritance.readyFD
        assert readyFD is not None
        # The supervisor may be slow to read: never block on it.
        self._setBlocking(readyFD, False)
        # The service routed SIGINT to its drain as it started: a worker
        # leaves Ctrl-C to its supervisor (see WORKER_IGNORES).
        self._signal(signal.SIGINT, signal.SIG_IGN)
        self._openChannels()
        self._send("ready", worker=self.given.index)
        self._log.info(
            "Worker {worker} serving as pid {pid}, supervisor {supervisorPID}",
            worker=self.given.index,
            pid=os.getpid(),
            supervisorPID=self.given.inheritance.parentPID,
            phase="worker-serving",
        )
        self._watchLifeline()
        self._stats = self.reactor.callLater(STATS_INTERVAL, self._report)

    def _openChannels(self) -> None:
        """
        Take connections from other workers from now on (I{down}), and be
        ready to offer this worker's when it drains (I{up}).
        """
        if self.given.channels is None:
            return
        import socket

        up, down = (socket.socket(fileno=f) for f in self.given.channels)
        for channel in (up, down):
            channel.set_inheritable(False)
            channel.setblocking(False)
        self._sender = HandoffSender(self.reactor, up, helloFirst=True)
        self._sender.start()
        self._receiver = HandoffReceiver(
            self.reactor, down, adopterFor(lambda: self._endpoints), parentPID=self.given.inheritance.parentPID
        )
        self._receiver.start()

    def _moveOnDrain(self) -> None:
        """
        The supervisor asks this worker to drain: if it said hello on
        I{up} (another worker takes the connections), idle kept-alive
        connections move instead of being closed.
        """
        if self._receiver is not None:
            self._receiver.close()
        sender = self._sender
        if sender is None:
            return
        sender.hear()  # The hello came before the lifeline closed.
        if not sender.open:
            sender.close("no other worker takes them")
            return
        for endpoint in self._endpoints:
            if endpoint.address.tlsContextFactory is None:
                endpoint.factory.moveOnDrain(EndpointMover(sender, endpoint.identity, endpoint.address.family))

    def _report(self) -> None:
        self._stats = None
        self._send("stats", requests=self.requests[0], rss=self._memory())
        if self.running:
            self._stats = self.reactor.callLater(STATS_INTERVAL, self._report)

    def _send(self, state: str, **fields: Any) -> None:
        readyFD = self.given.inheritance.readyFD
        assert readyFD is not None
        line = json.dumps(dict(fields, state=state, pid=os.getpid()), sort_keys=True).encode() + b"\n"
        try:
            self._write(readyFD, line)
        except BlockingIOError:
            pass  # The supervisor is behind: this report is dropped.
        except OSError:
            pass  # The supervisor is gone: the lifeline says so.

    def _watchLifeline(self) -> None:
        from ._parent import _Lifeline

        lifelineFD = self.given.inheritance.lifelineFD
        assert lifelineFD is not None
        self._setBlocking(lifelineFD, False)
        self._lifeline = _Lifeline(lifelineFD, lambda line: None, self._lifelineClosed, self._read)
        self.reactor.addReader(self._lifeline)

    def _lifelineClosed(self) -> None:
        lifeline, self._lifeline = self._lifeline, None
        if lifeline is None:
            return
        self.reactor.removeReader(lifeline)
        self._close(lifeline.fileno())
        self._log.info(
            "Supervisor {supervisorPID} asked this worker to stop (or has exited): draining",
            supervisorPID=self.given.inheritance.parentPID,
            worker=self.given.index,
            phase="worker-stopping",
        )
        self._moveOnDrain()
        try:
            self.reactor.stop()
        except Exception:
            pass  # Stopping already.

    def stopService(self) -> None:
        super().stopService()
        sender, self._sender = self._sender, None
        if sender is not None:
            moved, refused = sender.moved, sender.refused
            sender.close()
            if moved or refused:
                self._log.info(
                    "Moved {moved} kept-alive connections to another worker; {refused} stayed to drain here",
                    moved=moved,
                    refused=refused,
                    worker=self.given.index,
                    phase="handoff-sent",
                )
        if self._stats is not None and self._stats.active():
            self._stats.cancel()
        self._stats = None


WORKER_IGNORES = (signal.SIGHUP, signal.SIGUSR2, signal.SIGUSR1, signal.SIGINT)
"""
Signals a worker ignores: a terminal's hang-up and Ctrl-C reach the whole
foreground process group, and are the supervisor's to act on (it drains
its workers itself); the others are meant for the supervisor only.
"""
