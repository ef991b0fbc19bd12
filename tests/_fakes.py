"""
Verified fakes for unit tests: a reactor whose adopted ports record what is
done to them, and whose C{spawnProcess} hands the test the process to play.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IListeningPort, IProcessTransport, IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
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
        self.reading = False
        self.stopListeningCalls = 0
        self.socket = FakeListeningSocket()

    def startListening(self) -> None:
        self.listening = True
        self.reading = True
        self.factory.doStart()

    def stopReading(self) -> None:
        """
        As C{FileDescriptor.stopReading}: accept no more, but stay open.
        """
        self.reading = False

    def startReading(self) -> None:
        """
        As C{FileDescriptor.startReading}: accept again.
        """
        self.reading = True

    def stopListening(self) -> Any:
        self.stopListeningCalls += 1
        self.reading = False
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


class QueueingPort(RecordingPort):
    """
    A L{RecordingPort} shaped like C{twisted.internet.tcp.Port}: the kernel
    has C{queued} connections waiting, which C{doRead} accepts (up to
    C{numberAccepts}); C{stopListening} closes the socket one reactor turn
    later, through C{connectionLost}.

    @ivar order: Where C{"accepted"}, C{"refused"} and C{"closed"} are
        recorded, in order.
    """

    def __init__(self, fileno: int, family: int, factory: Any, reactor: Any, order: list[str]) -> None:
        super().__init__(fileno, family, factory)
        self._reactor = reactor
        self.order = order
        self.queued = 0
        self.numberAccepts = 100
        self.disconnecting = False
        self.closed = False

    def doRead(self) -> None:
        if self.closed:
            raise RuntimeError("doRead on a closed port")
        while self.queued and self.numberAccepts > 0:
            self.queued -= 1
            protocol = self.factory.buildProtocol(self.getHost())
            self.order.append("refused" if protocol is None else "accepted")
            if protocol is not None:
                transport = StringTransportWithDisconnection(hostAddress=self.getHost())
                transport.protocol = protocol
                protocol.makeConnection(transport)

    def connectionLost(self, reason: Any) -> None:
        if self.closed:
            return
        self.closed = True
        self.reading = False
        self.queued = 0
        self.socket.close()
        self.order.append("closed")
        if self.listening:
            self.listening = False
            self.factory.doStop()

    def stopListening(self) -> Any:
        self.stopListeningCalls += 1
        self.disconnecting = True
        self.reading = False
        return deferLater(self._reactor, 0, self.connectionLost, None)


class FakeListeningSocket:
    """
    The socket object of a port: records C{listen} and C{close}.
    """

    def __init__(self) -> None:
        self.closed = False
        self.backlog: int | None = None

    def listen(self, backlog: int) -> None:
        self.backlog = backlog

    def close(self) -> None:
        self.closed = True


@implementer(IProcessTransport)
class FakeProcess:
    """
    A process started by L{FakeReactor.spawnProcess}.  The test plays the
    process: it sends what the process writes with L{fromChild}, ends it
    with L{exit}, and reads what was written to it in C{written}.

    @ivar signals: The signals sent with C{signalProcess}.
    """

    def __init__(
        self,
        proto: ProcessProtocol,
        executable: str,
        args: list[str],
        env: dict[str, str],
        path: str | None,
        childFDs: dict[int, int | str],
        pid: int,
    ) -> None:
        self.proto = proto
        self.executable = executable
        self.args = args
        self.env = env
        self.path = path
        self.childFDs = childFDs
        self.pid: int | None = pid
        self.written: dict[int, bytes] = {}
        self.closedFDs: list[int] = []
        self.signals: list[str] = []

    def fromChild(self, childFD: int, data: bytes) -> None:
        """
        The process writes C{data} on its descriptor C{childFD}, which must
        be one the parent reads.
        """
        if self.childFDs.get(childFD) != "r":
            raise ValueError(f"descriptor {childFD} is not read by the parent: {self.childFDs!r}")
        self.proto.childDataReceived(childFD, data)

    def exit(self, reason: Any) -> None:
        """
        The process ends: every pipe closes, then it is reaped with
        C{reason} (a L{Failure} of L{ProcessDone} or L{ProcessTerminated}).
        """
        for childFD, kind in sorted(self.childFDs.items()):
            if kind in ("r", "w") and childFD not in self.closedFDs:
                self.proto.childConnectionLost(childFD)
        self.pid = None
        self.proto.processExited(reason)
        self.proto.processEnded(reason)

    # IProcessTransport

    def writeToChild(self, childFD: int, data: bytes) -> None:
        if self.childFDs.get(childFD) != "w":
            raise KeyError(childFD)
        self.written[childFD] = self.written.get(childFD, b"") + data

    def closeChildFD(self, childFD: int) -> None:
        self.closedFDs.append(childFD)

    def closeStdin(self) -> None:
        self.closeChildFD(0)

    def closeStdout(self) -> None:
        self.closeChildFD(1)

    def closeStderr(self) -> None:
        self.closeChildFD(2)

    def signalProcess(self, signalID: str | int) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        self.signals.append(str(signalID))

    def loseConnection(self) -> None:
        for childFD in self.childFDs:
            self.closeChildFD(childFD)

    def write(self, data: bytes) -> None:
        self.writeToChild(0, data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def getHost(self) -> Any:
        raise NotImplementedError()

    def getPeer(self) -> Any:
        raise NotImplementedError()


verifyClass(IProcessTransport, FakeProcess)


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
        port = self._makePort(fileno, addressFamily, factory)
        port.startListening()
        self.ports.append(port)
        return port

    def _makePort(self, fileno: int, addressFamily: int, factory: Any) -> RecordingPort:
        return RecordingPort(fileno, addressFamily, factory)


class QueueingReactor(FakeReactor):
    """
    A L{FakeReactor} whose adopted ports are L{QueueingPort}s recording into
    one C{order} list.
    """

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    def _makePort(self, fileno: int, addressFamily: int, factory: Any) -> RecordingPort:
        return QueueingPort(fileno, addressFamily, factory, self, self.order)


@implementer(IReactorProcess)
class SpawningReactor(FakeReactor):
    """
    A L{FakeReactor} whose C{spawnProcess} checks its arguments as the real
    one does, and records a L{FakeProcess} for the test to play.

    @ivar failSpawn: When set, C{spawnProcess} raises it (as the real one
        does when the executable cannot be run).
    """

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.failSpawn: Exception | None = None
        self.nextPID = 5000

    def spawnProcess(
        self,
        processProtocol: Any,
        executable: Any,
        args: Any,
        env: Any = None,
        path: Any = None,
        uid: Any = None,
        gid: Any = None,
        usePTY: Any = False,
        childFDs: Any = None,
    ) -> FakeProcess:
        if not isinstance(executable, (str, bytes)):
            raise TypeError(f"executable must be a path, not {executable!r}")
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, (str, bytes)) for a in args):
            raise TypeError(f"args must be a sequence of strings, not {args!r}")
        if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise TypeError(f"env must map strings to strings, not {env!r}")
        fds = {0: "w", 1: "r", 2: "r"} if childFDs is None else dict(childFDs)
        for childFD, kind in fds.items():
            if not isinstance(childFD, int) or not (isinstance(kind, int) or kind in ("r", "w")):
                raise ValueError(f"childFDs must map descriptors to a descriptor, 'r' or 'w', not {childFDs!r}")
        if self.failSpawn is not None:
            raise self.failSpawn
        self.nextPID += 1
        process = FakeProcess(processProtocol, executable, list(args), dict(env or {}), path, fds, self.nextPID)
        self.processes.append(process)
        processProtocol.makeConnection(process)
        return process


verifyClass(IReactorProcess, SpawningReactor)


def patchStatic(test: Any, cls: type, name: str, replacement: Any) -> None:
    """
    Replace the static method C{cls.name} for one test.  (C{test.patch}
    would restore the plain function, which then binds as a method.)
    """
    original = vars(cls)[name]
    setattr(cls, name, staticmethod(replacement))
    test.addCleanup(setattr, cls, name, original)
