# -*- test-case-name: tests.test_broker -*-
"""
Kept-alive connections from an old worker to a new one, through their
supervisor.

Each worker gets two hand-off channels (L{twisted_graceful._handoff}) at
spawn: I{up}, on which it offers its connections when it drains, and
I{down}, on which it takes connections once it is ready.  The supervisor
holds the other ends.  It says hello on a worker's I{up} only when it drains
that worker with another one ready to take its connections (a rolling
restart, a recycle), and passes each connection offered on to the newest
ready worker on its I{down}, relaying the answer.  A worker drained with no
such worker (the supervisor stops, a crash loop) hears no hello and drains
as a single server does.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ._handoff import HandoffReceiver, HandoffSender, makeChannel


@define(eq=False)
class WorkerChannels:
    """
    One worker's two channels.

    @ivar up: The supervisor's end of the channel the worker offers on.
    @ivar down: The supervisor's end of the channel the worker takes from.
    @ivar workerUp: The worker's end of C{up} (for its C{childFDs}; closed
        here once it is spawned).
    @ivar workerDown: The worker's end of C{down}.
    """

    up: socket.socket
    down: socket.socket
    workerUp: socket.socket
    workerDown: socket.socket

    @classmethod
    def make(cls) -> WorkerChannels:
        up, workerUp = makeChannel()
        down, workerDown = makeChannel()
        return cls(up, down, workerUp, workerDown)

    def spawned(self) -> None:
        """
        The worker holds its ends now: close this process's copies.
        """
        self.workerUp.close()
        self.workerDown.close()


@define(eq=False)
class _Worker:
    channels: WorkerChannels
    sender: HandoffSender
    order: int
    receiver: HandoffReceiver | None = None
    draining: bool = False


@define(eq=False)
class Broker:
    """
    The supervisor's side: passes connections from draining workers to
    ready ones.
    """

    _log = Logger()

    _reactor: Any
    upstream: HandoffSender | None = None
    _workers: dict[object, _Worker] = field(init=False, factory=dict)
    _count: int = field(init=False, default=0)

    def add(self, worker: object, channels: WorkerChannels) -> None:
        """
        C{worker} was spawned with C{channels}: hear its hello on I{down}
        (once it is ready).
        """
        self._count += 1
        sender = HandoffSender(self._reactor, channels.down, helloFirst=True)
        sender.start()
        self._workers[worker] = _Worker(channels, sender, self._count)

    def remove(self, worker: object) -> None:
        """
        C{worker} has exited: close its channels.
        """
        record = self._workers.pop(worker, None)
        if record is None:
            return
        if record.receiver is not None:
            record.receiver.close()
        else:
            record.channels.up.close()
        record.sender.close("the worker exited")

    def _target(self, draining: object) -> _Worker | None:
        """
        The newest worker, other than C{draining}, that said hello and
        does not drain.
        """
        ready = []
        for key, record in self._workers.items():
            if key is draining or record.draining:
                continue
            record.sender.hear()
            if record.sender.open:
                ready.append(record)
        return max(ready, key=lambda w: w.order, default=None)

    def _targetSender(self, draining: object) -> HandoffSender | None:
        """
        Where connections go: the successor supervisor (C{upstream}, while
        its channel takes them), else the newest ready worker.
        """
        if self.upstream is not None and self.upstream.open:
            return self.upstream
        target = self._target(draining)
        return target.sender if target is not None else None

    def draining(self, worker: object, moveConnections: bool) -> None:
        """
        C{worker} is about to be told to drain: if C{moveConnections} and
        another worker is ready, say hello on its I{up}, so that it offers
        its idle connections, and pass them on.
        """
        record = self._workers.get(worker)
        if record is None or record.draining:
            return
        record.draining = True
        if not moveConnections or self._targetSender(worker) is None:
            return
        record.channels.up.setblocking(False)
        record.receiver = HandoffReceiver(
            self._reactor, record.channels.up, self.passOn, parentPID=getattr(worker, "pid", None)
        )
        record.receiver.start()

    def passOn(self, identity: str, family: int, fileno: int) -> Deferred[str | None]:
        """
        Offer the connection C{fileno} to the successor supervisor, or to
        the newest ready worker.
        """
        answer: Deferred[str | None] = Deferred()
        target = self._targetSender(None)
        if target is None:
            answer.callback("no worker takes it")
            return answer
        mine = os.dup(fileno)

        def taken() -> None:
            os.close(mine)
            answer.callback(None)

        def refused(why: str) -> None:
            os.close(mine)
            answer.callback(why)

        if not target.offer(identity, family, mine, taken, refused):
            os.close(mine)
            answer.callback("no worker takes it")
        return answer
