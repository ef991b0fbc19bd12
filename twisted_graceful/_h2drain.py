# -*- test-case-name: tests.test_h2drain -*-
"""
Draining an HTTP/2 connection with the two-step GOAWAY of RFC 9113
section 6.8.

A single GOAWAY naming the last stream the server has seen refuses the
streams a client opened while the frame was on its way: the client had sent
them, the server never saw them.  So the drain first sends a PING and a
GOAWAY that names the highest possible stream (2^31-1): the client opens no
new stream, and every stream it opened before it read the GOAWAY reaches the
server before the PING's acknowledgement does.  Once that acknowledgement is
back (or after L{PING_BOUND}), a second GOAWAY names the last stream actually
received; every stream up to it completes, later ones are refused with
C{REFUSED_STREAM} (safe to retry), and the connection closes when its last
stream is done.

Clients built on the C{h2} library (httpx among them) treat any GOAWAY as
the end of the connection, and fail the streams still open on it, or whose
response they have not read to its end (python-hyper/h2#1181).  The first
GOAWAY therefore waits until the connection has had no stream open for the
idle grace (as an HTTP/1.1 connection is closed once idle that long), or,
for a connection that is never idle, until L{BUSY_BOUND} has passed (at
most half the drain's deadline).

Like L{twisted_graceful._drain}, this module touches private Twisted names:
each use is marked C{PRIVATE} and pinned by C{tests/test_h2drain.py}.
"""

from __future__ import annotations

from typing import Any, Callable

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime

MAX_STREAM_ID = 2**31 - 1

PING_BOUND = 1.0
"""
Seconds to wait for the acknowledgement of the drain's PING before sending
the final GOAWAY anyway.
"""

LINGER = 1.0
"""
Seconds to wait, once the last stream is done after the final GOAWAY, for
the client to close the connection before the server closes it.
"""

BUSY_BOUND = 5.0
"""
Seconds an HTTP/2 connection that always has a stream open may go on
opening streams after the drain began, before it is told to stop.
"""

_PING_DATA = b"drain\x00\x00\x00"


@define(eq=False)
class HTTP2Drain:
    """
    The drain of one HTTP/2 connection.

    @ivar _channel: The C{twisted.web._http2.H2Connection}.
    @ivar _onRequestDone: Called each time a stream completes.
    @ivar _close: Closes the connection.
    """

    _channel: Any
    _clock: IReactorTime
    _idleGrace: float
    _busyBound: float
    _onRequestDone: Callable[[], None]
    _close: Callable[[], None]
    _stage: str = field(init=False, default="waiting")
    _timer: IDelayedCall | None = field(init=False, default=None)
    _idleTimer: IDelayedCall | None = field(init=False, default=None)
    _lastActive: float = field(init=False, default=0.0)
    _lastStream: int = field(init=False, default=MAX_STREAM_ID)
    _refused: set[int] = field(init=False, factory=set)
    _acknowledged: bool = field(init=False, default=False)

    @property
    def stage(self) -> str:
        """
        C{"waiting"} for the connection to go idle, C{"announced"} once the
        first GOAWAY is sent, C{"final"} once the last one is.
        """
        return self._stage

    def start(self, lastActive: float) -> None:
        """
        Begin the drain.

        @param lastActive: When the connection last received data.
        """
        self._lastActive = lastActive
        channel = self._channel
        # PRIVATE: H2Connection._requestDone (a stream finished), .conn (the
        # h2 state machine, whose receive_data returns the events Twisted
        # then handles), .dataReceived.
        finished = channel._requestDone
        receive = channel.conn.receive_data
        dataReceived = channel.dataReceived

        def requestDone(streamID: int) -> None:
            self._onRequestDone()
            finished(streamID)
            self._lastActive = self._clock.seconds()
            self._streamsChanged()

        def receiveData(data: bytes) -> list[Any]:
            return self._filter(receive(data))

        def dataReceivedThenFinish(data: bytes) -> None:
            self._lastActive = self._clock.seconds()
            dataReceived(data)
            if self._acknowledged and self._stage == "announced":
                self._finish()
            elif self._stage == "waiting" and channel.streams:
                self._cancelIdle()

        channel._requestDone = requestDone
        channel.conn.receive_data = receiveData
        channel.dataReceived = dataReceivedThenFinish
        self._timer = self._clock.callLater(self._busyBound, self._announce)
        self._streamsChanged()

    def stop(self) -> None:
        """
        The connection is gone, or the drain went on to its next step:
        forget the timers.
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._cancelIdle()

    def _cancelIdle(self) -> None:
        if self._idleTimer is not None and self._idleTimer.active():
            self._idleTimer.cancel()
        self._idleTimer = None

    def _streamsChanged(self) -> None:
        if self._channel.streams:
            return
        if self._stage == "waiting":
            self._cancelIdle()
            delay = self._lastActive + self._idleGrace - self._clock.seconds()
            if delay <= 0:
                self._announce()
            else:
                self._idleTimer = self._clock.callLater(delay, self._announce)
        elif self._stage == "final" and self._timer is None:
            # The client closes a connection whose last stream is done once
            # it has read the final GOAWAY: let it close first.  Closing a
            # socket that still has unread bytes from the client (a
            # WINDOW_UPDATE, an acknowledgement) resets the connection, and a
            # reset can discard the responses the client has not read yet.
            self._timer = self._clock.callLater(LINGER, self._close)

    def _write(self, frame: Any) -> bool:
        channel = self._channel
        if channel.transport is None:
            return False
        # PRIVATE: H2Connection._tryToWriteControlData flushes h2's pending
        # frames, or returns False once it has aborted the connection.
        if not channel._tryToWriteControlData():
            return False
        if frame is not None:
            channel.transport.write(frame.serialize())
        return True

    def _announce(self) -> None:
        """
        The first step: a PING, then a GOAWAY naming the highest stream.

        The PING goes first: a client built on C{h2} refuses any frame but
        GOAWAY once it has read one.  The GOAWAY is written by hand, as is
        the last one: C{h2}'s own C{close_connection} would move the server's
        state machine to CLOSED, after which the open streams could not send
        their responses.
        """
        from hyperframe.frame import GoAwayFrame

        self.stop()
        self._stage = "announced"
        self._channel.conn.ping(_PING_DATA)
        if not self._write(GoAwayFrame(0, last_stream_id=MAX_STREAM_ID, error_code=0)):
            return
        self._timer = self._clock.callLater(PING_BOUND, self._finish)

    def _finish(self) -> None:
        """
        The last step: a GOAWAY naming the last stream received.
        """
        from hyperframe.frame import GoAwayFrame

        if self._stage != "announced":
            return
        self.stop()
        self._stage = "final"
        self._lastStream = self._channel.conn.highest_inbound_stream_id
        if not self._write(GoAwayFrame(0, last_stream_id=self._lastStream, error_code=0)):
            return
        self._streamsChanged()

    def _filter(self, events: list[Any]) -> list[Any]:
        """
        Note the acknowledgement of the drain's PING, and refuse the streams
        opened after the final GOAWAY: their events never reach Twisted.

        The body a refused stream sent in the same read as its headers
        arrives here as C{DataReceived} events, which C{h2} has counted
        against the connection's flow-control window: it is acknowledged
        here, since Twisted, which acknowledges the data of its own streams,
        never sees it.  Without that, refused bodies would shrink the window
        for good, until no stream on the connection could send a byte.  (The
        DATA that arrives after the refusal is acknowledged by C{h2} itself,
        as data on a closed stream.)
        """
        from h2.errors import ErrorCodes
        from h2.events import DataReceived, PingAckReceived, RequestReceived

        kept = []
        for event in events:
            if isinstance(event, PingAckReceived) and event.ping_data == _PING_DATA:
                self._acknowledged = True
                continue
            streamID = getattr(event, "stream_id", None)
            if streamID is not None and streamID in self._refused:
                if isinstance(event, DataReceived) and event.flow_controlled_length:
                    self._channel.conn.acknowledge_received_data(event.flow_controlled_length, streamID)
                continue
            if isinstance(event, RequestReceived) and event.stream_id > self._lastStream:
                self._refused.add(event.stream_id)
                self._channel.conn.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
                continue
            kept.append(event)
        return kept
