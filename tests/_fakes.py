"""
Verified fakes for unit tests: a reactor whose adopted ports record what is
done to them.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyClass


@implementer(IListeningPort)
class RecordingPort:
    """
    An adopted listening port: records C{stopListening}, stops its factory
    as a real port does, and answers C{fileno}.
    """

    def __init__(self, fileno: int, family: int, factory: Any) -> None:
        self._fileno = fileno
        self.family = family
        self.factory = factory
        self.listening = False

    def startListening(self) -> None:
        self.listening = True
        self.factory.doStart()

    def stopListening(self) -> Any:
        if self.listening:
            self.listening = False
            self.factory.doStop()
        return succeed(None)

    def getHost(self) -> Any:
        if self.family == socket.AF_INET6:
            return IPv6Address("TCP", "::1", 40000 + self._fileno)
        if self.family == socket.AF_UNIX:
            return UNIXAddress(b"/tmp/fake.sock")
        return IPv4Address("TCP", "127.0.0.1", 40000 + self._fileno)

    def fileno(self) -> int:
        return self._fileno


verifyClass(IListeningPort, RecordingPort)


class FakeReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose C{adoptStreamPort} refuses bad arguments
    as the real one does, and returns a L{RecordingPort}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[RecordingPort] = []

    def adoptStreamPort(self, fileno: int, addressFamily: int, factory: Any) -> RecordingPort:
        if not isinstance(fileno, int) or fileno < 0:
            raise TypeError(f"fileno must be a descriptor number, not {fileno!r}")
        if addressFamily not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            raise ValueError(f"unsupported address family {addressFamily!r}")
        self.adoptedPorts.append((fileno, addressFamily, factory))
        port = RecordingPort(fileno, addressFamily, factory)
        port.startListening()
        self.ports.append(port)
        return port


def patchStatic(test: Any, cls: type, name: str, replacement: Any) -> None:
    """
    Replace the static method C{cls.name} for one test.  (C{test.patch}
    would restore the plain function, which then binds as a method.)
    """
    original = vars(cls)[name]
    setattr(cls, name, staticmethod(replacement))
    test.addCleanup(setattr, cls, name, original)
