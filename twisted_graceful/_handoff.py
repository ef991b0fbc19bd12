# -*- test-case-name: tests.test_handoff_channel -*-
"""
The hand-off channel: how an old process passes kept-alive connections to
its successor.

At each restart the old process makes a UNIX C{SOCK_SEQPACKET} socket pair
and gives one end to the successor (announced in the hand-over
environment).  Each message is one JSON object; a connection travels as its
descriptor (C{SCM_RIGHTS}) beside a header naming the endpoint that served
it:

    - successor to old process, once it is ready: C{{"hello": 1, "limit": N}}:
      it reads the channel from now on and takes up to C{N} connections;
    - old process to successor: C{{"seq": S, "identity": I, "family": F}}
      with one descriptor;
    - successor to old process: C{{"seq": S, "taken": true}}, or
      C{{"seq": S, "taken": false, "reason": R}}.

The old process keeps each connection it offers, reading nothing from it,
until the successor answers: a connection taken is then closed here without
a byte on the wire (L{twisted_graceful._movable.detach}); one refused, or
left unanswered when the channel breaks or stays silent, is served and
drained here as usual.  Nothing is lost either way.
"""

from __future__ import annotations

import json
import os
import socket
from collections import deque
from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

DEFAULT_HANDOFF_LIMIT = 4096
"""
Connections a successor takes from its predecessor at most, by default.
"""

WINDOW = 64
"""
Connections offered and not yet answered at most: each is a descriptor in
flight, which the kernel counts against the sender's open file limit.
"""

ANSWER_TIMEOUT = 5.0
"""
Seconds the old process waits for the successor's hello, or for an answer,
before it keeps every connection it offered and offers no more.
"""

FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
_MAX_MESSAGE = 4096

_log = Logger()


def makeChannel() -> tuple[socket.socket, socket.socket]:
    """
    A new hand-off channel: C{(this process's end, the successor's end)}.
    Neither end is inheritable; hand the successor's to C{spawnProcess}'s
    C{childFDs}, then close it here.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    return ours, theirs


def send(sock: socket.socket, message: dict[str, Any], fds: tuple[int, ...] = ()) -> bool:
    """
    Send C{message} (and C{fds}) as one packet.

    @return: C{False} if the socket's buffer is full (nothing was sent).
    @raise OSError: The channel is broken.
    """
    data = json.dumps(message, separators=(",", ":")).encode()
    try:
        if fds:
            socket.send_fds(sock, [data], list(fds))
        else:
            sock.send(data)
    except BlockingIOError:
        return False
    return True


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]] | None:
    """
    Receive one packet.

    @return: L{None} when none is waiting; else the message (L{None} if it
        is not a JSON object) and the descriptors that came with it, which
        the caller must close.
    @raise EOFError: The other end closed the channel.
    @raise OSError: The channel is broken.
    """
    try:
        data, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 4, socket.MSG_CMSG_CLOEXEC)
    except BlockingIOError:
        return None
    if not data and not fds:
        raise EOFError()
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    return (message if isinstance(message, dict) else None), list(fds)


@define(eq=False)
class _Offer:
    seq: int
    identity: str
    family: int
    fileno: int
    taken: Callable[[], None]
    refused: Callable[[str], None]


@implementer(IReadDescriptor)
@define(eq=False)
class HandoffSender:
    """
    The old process's end of the channel: offers connections, hears the
    answers.

    @ivar moved: Connections the successor took.
    @ivar refused: Connections it refused, or left unanswered.
    """

    _log = Logger()

    _reactor: Any
    _sock: socket.socket
    _timeout: float = ANSWER_TIMEOUT
    helloFirst: bool = False
    moved: int = field(init=False, default=0)
    refused: int = field(init=False, default=0)
    _hello: bool = field(init=False, default=False)
    _closed: bool = field(init=False, default=False)
    _remaining: int = field(init=False, default=0)
    _seq: int = field(init=False, default=0)
    _queue: deque[_Offer] = field(init=False, factory=deque)
    _inFlight: dict[int, _Offer] = field(init=False, factory=dict)
    _silence: IDelayedCall | None = field(init=False, default=None)

    def start(self) -> None:
        """
        Hear the successor from now on.
        """
        self._reactor.addReader(self)

    @property
    def open(self) -> bool:
        """
        C{True} while offers may be taken: the channel works and the
        successor has room for more (as far as this process knows).  With
        C{helloFirst}, only once the successor has said hello: a channel
        whose other end may never speak (a worker's, to its supervisor)
        takes no offer before.
        """
        if self.helloFirst and not self._hello:
            return False
        return not self._closed and (not self._hello or self._remaining > 0)

    def hear(self) -> None:
        """
        Read what the successor has sent so far, now (as the reactor would
        once the channel is readable).
        """
        if not self._closed:
            self.doRead()

    def offer(
        self, identity: str, family: int, fileno: int, taken: Callable[[], None], refused: Callable[[str], None]
    ) -> bool:
        """
        Offer the connection C{fileno} to the successor.  Exactly one of
        C{taken} and C{refused} (with the reason) is called later, never
        from within this call.  Until then the caller must keep the
        connection open and read nothing from it.

        @return: C{False} if the channel takes no more offers.
        """
        if not self.open:
            return False
        self._seq += 1
        self._queue.append(_Offer(self._seq, identity, family, fileno, taken, refused))
        self._pump()
        self._watchSilence()
        return True

    def _pump(self) -> None:
        while self._hello and self._queue and len(self._inFlight) < WINDOW and not self._closed:
            offer = self._queue[0]
            if self._remaining <= 0:
                self._queue.popleft()
                self.refused += 1
                self._reactor.callLater(0, offer.refused, "limit")
                continue
            header = {"seq": offer.seq, "identity": offer.identity, "family": offer.family}
            try:
                sent = send(self._sock, header, (offer.fileno,))
            except OSError as e:
                self.close(f"the channel broke ({e})")
                return
            if not sent:
                return  # Sent again when an answer frees room.
            self._queue.popleft()
            self._inFlight[offer.seq] = offer
            self._remaining -= 1

    def _watchSilence(self) -> None:
        if self._silence is not None and self._silence.active():
            self._silence.cancel()
        self._silence = None
        if not self._closed and (self._queue or self._inFlight):
            self._silence = self._reactor.callLater(self._timeout, self._silent)

    def _silent(self) -> None:
        self._silence = None
        self.close(f"the successor did not answer within {self._timeout} s")

    # IReadDescriptor

    def fileno(self) -> int:
        return -1 if self._closed else self._sock.fileno()

    def logPrefix(self) -> str:
        return "twisted_graceful.handoff"

    def doRead(self) -> None:
        while not self._closed:
            try:
                received = receive(self._sock)
            except EOFError:
                self.close("the successor closed the channel")
                return
            except OSError as e:
                self.close(f"the channel broke ({e})")
                return
            if received is None:
                break
            message, fds = received
            for fd in fds:
                os.close(fd)
            self._heard(message)
        self._pump()
        self._watchSilence()

    def _heard(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        if message.get("hello") == 1 and not self._hello:
            limit = message.get("limit")
            self._hello = True
            self._remaining = limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
            return
        offer = self._inFlight.pop(message.get("seq"), None)  # type: ignore[arg-type]
        if offer is None:
            return
        if message.get("taken") is True:
            self.moved += 1
            offer.taken()
        else:
            self.refused += 1
            self._remaining += 1
            offer.refused(str(message.get("reason", "refused")))

    def connectionLost(self, reason: object) -> None:
        self.close("the channel broke")

    def close(self, why: str = "the restart is over") -> None:
        """
        Close the channel: every connection offered and not yet taken is
        refused (kept by this process).
        """
        if self._closed:
            return
        pending = list(self._inFlight.values()) + list(self._queue)
        if pending:
            self._log.warn(
                "Keeping {count} connections offered to the successor: {why}",
                count=len(pending),
                why=why,
                phase="handoff-broken",
            )
        self._reactor.removeReader(self)
        self._closed = True
        self._sock.close()
        self._watchSilence()  # Cancels the silence timer.
        self._inFlight.clear()
        self._queue.clear()
        for offer in pending:
            self.refused += 1
            self._reactor.callLater(0, offer.refused, why)


@implementer(IReadDescriptor)
@define(eq=False)
class HandoffReceiver:
    """
    The successor's end of the channel: takes the connections its
    predecessor offers, once it is ready.

    @ivar moved: Connections taken.
    @ivar refused: Connections refused, by reason.
    """

    _log = Logger()

    _reactor: Any
    _sock: socket.socket
    _adopt: Callable[[str, socket.AddressFamily, int], str | None | Deferred[str | None]]
    _limit: int = DEFAULT_HANDOFF_LIMIT
    parentPID: int | None = None
    moved: int = field(init=False, default=0)
    refused: dict[str, int] = field(init=False, factory=dict)
    _closed: bool = field(init=False, default=False)
    _pending: int = field(init=False, default=0)

    def _settled(self, result: Any) -> Any:
        self._pending -= 1
        return result

    def start(self) -> None:
        """
        Tell the predecessor this process takes connections, and read the
        channel from now on.  Call this once the process is ready.
        """
        self._sock.setblocking(False)
        try:
            send(self._sock, {"hello": 1, "limit": self._limit})
        except OSError:
            self.close()
            return
        self._reactor.addReader(self)

    def fileno(self) -> int:
        return -1 if self._closed else self._sock.fileno()

    def logPrefix(self) -> str:
        return "twisted_graceful.handoff"

    def doRead(self) -> None:
        while not self._closed:
            try:
                received = receive(self._sock)
            except (EOFError, OSError):
                self.close()
                return
            if received is None:
                return
            message, fds = received
            try:
                seq, reason = self._take(message, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            if isinstance(reason, Deferred):
                # Answered later (a supervisor passing it on to a worker).
                reason.addCallback(self._answer, seq)
            else:
                self._answer(reason, seq)

    def _answer(self, reason: str | None, seq: int | None) -> None:
        if reason is None:
            self.moved += 1
        else:
            self.refused[reason] = self.refused.get(reason, 0) + 1
        if seq is None or self._closed:
            return
        try:
            send(self._sock, {"seq": seq, "taken": reason is None, "reason": reason or ""})
        except OSError:
            self.close()

    def _take(
        self, message: dict[str, Any] | None, fds: list[int]
    ) -> tuple[int | None, str | None | Deferred[str | None]]:
        """
        Adopt the connection C{message} and C{fds} carry, if it is one.

        @return: The sequence number to answer (or L{None}), and why the
            connection was refused (or L{None} if it was taken), or a
            L{Deferred} of that; the adopter dups C{fds[0]} if it needs it
            once it returns.
        """
        seq = None if message is None else message.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return None, "malformed"
        assert message is not None
        identity, family = message.get("identity"), message.get("family")
        if not isinstance(identity, str) or family not in FAMILIES or len(fds) != 1:
            return seq, "malformed"
        if not isConnectedStream(fds[0], family):
            return seq, "not a connected socket"
        if self.moved + self._pending >= self._limit:
            return seq, "limit"
        try:
            adopted = self._adopt(identity, socket.AddressFamily(family), fds[0])
            if isinstance(adopted, Deferred):
                self._pending += 1
                adopted.addBoth(self._settled)
            return seq, adopted
        except Exception:
            self._log.failure("Adopting a connection of {identity} failed", identity=identity, phase="handoff-error")
            return seq, "error"

    def connectionLost(self, reason: object) -> None:
        self.close()

    def close(self) -> None:
        """
        Stop reading the channel (the predecessor closed it, or is gone),
        and log what was taken.
        """
        if self._closed:
            return
        self._closed = True
        self._reactor.removeReader(self)
        self._sock.close()
        self._log.info(
            "Took {moved} kept-alive connections from pid {parentPID}; refused {refusedCount}",
            moved=self.moved,
            parentPID=self.parentPID,
            refusedCount=sum(self.refused.values()),
            refused=dict(self.refused),
            phase="handoff-received",
        )


def isConnectedStream(fileno: int, family: int) -> bool:
    """
    Whether C{fileno} is a connected stream socket of C{family}.
    """
    try:
        probe = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return False
    try:
        if probe.type != socket.SOCK_STREAM or probe.family != family:
            return False
        probe.getpeername()
        return True
    except OSError:
        return False
    finally:
        probe.close()
