# -*- test-case-name: tests.test_limits -*-
"""
A limit on request bodies (C{twistd graceful --max-request-body}).

C{twisted.web} limits the request line and headers (16 KiB in all, 500
headers) but not the body: it spools any body larger than 100 kB to a
temporary file, however large the client says it is.  L{limitBodies} makes a
L{Site} answer a body over the limit with C{413 Payload Too Large}.  Over
HTTP/1.1 the answer goes out as soon as the C{Content-Length} (or the
chunks received so far) exceed the limit, and the connection is closed: the
rest is never read.  Over HTTP/2 the excess is discarded and the stream is
answered 413 when it ends.  Nothing over the limit is stored.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, cast

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

_BODY = b"The request body is larger than this server accepts.\n"


class _LimitedRequest(Request):
    """
    A request that refuses a body over C{maxBody} bytes.
    """

    maxBody = 0
    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.maxBody:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.maxBody:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self._refused = True
        self.content = BytesIO()
        if isinstance(self.channel, HTTPChannel):
            self.channel.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
            )
            self.channel.transport.loseConnection()  # type: ignore[union-attr]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused and isinstance(self.channel, HTTPChannel):
            return  # Answered already; the connection is closing.
        super().requestReceived(command, path, version)

    def process(self) -> None:
        if not self._refused:
            super().process()
            return
        self.setResponseCode(413)
        self.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        self.setHeader(b"Connection", b"close")
        self.write(_BODY)
        self.finish()


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parseSize(text: str) -> int:
    """
    C{1048576}, C{1024K}, C{1M} or C{1G} as a number of bytes.

    @raise ValueError: Not such a size; the message shows the forms.
    """
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in ("K", "M", "G") else ""
    number = value[: len(value) - len(unit)]
    if not (number.isascii() and number.isdigit()):
        raise ValueError(f"expected a size such as 1048576, 512K, 10M or 1G, not {text!r}")
    return int(number) * _UNITS[unit]


def limitBodies(site: Site, maxBody: int) -> Site:
    """
    Make C{site} answer a request body over C{maxBody} bytes with 413.

    @return: C{site}.
    @raise ValueError: C{maxBody} is negative.
    """
    if maxBody < 0:
        raise ValueError(f"maxBody must be zero or more bytes, not {maxBody!r}.")
    base: Any = site.requestFactory
    if not (isinstance(base, type) and issubclass(base, Request)):
        raise TypeError(f"Cannot limit request bodies of {site!r}: its requestFactory {base!r} is not a Request class.")
    site.requestFactory = cast("type[Request]", type("LimitedRequest", (_LimitedRequest, base), {"maxBody": maxBody}))
    return site
