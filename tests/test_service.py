"""
Tests for L{twisted_graceful._service}.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ProcessTerminated
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from twisted_graceful import (
    SuccessorDied,
    BadEndpoint,
    ChildExitedEarly,
    ChildReadyTimeout,
    GracefulService,
    GracefulSiteService,
    ListenFailed,
    NotReadyToRestart,
)
from twisted_graceful._child import DEFAULT_KILL_GRACE
from twisted_graceful._notify import Notifier
from twisted_graceful._status import readStatus
from twisted_graceful._endpoint import ListenAddress, bindSocket
from twisted_graceful._listener import Listener
from twisted_graceful._systemd import SystemdSocket

from ._fakes import FakeProcess, FakeReactor, QueueingPort, QueueingReactor, SpawningReactor, patchStatic
from ._http import HeldResource, RawClient, request

SHUTDOWN_TIMEOUT = 5.0
AT_LEAST_SHUTDOWN_TIMEOUT = SHUTDOWN_TIMEOUT + 1


class FakeSocket:
    """
    Stands for a bound listening socket: a descriptor number and close().
    """

    def __init__(self, fileno: int) -> None:
        self._fileno = fileno
        self.closed = False

    def fileno(self) -> int:
        return self._fileno

    def close(self) -> None:
        self.closed = True


class FakeBinder:
    """
    Replaces L{bindSocket}: hands out fake sockets, or fails for chosen
    identities the way the real one does.
    """

    def __init__(self) -> None:
        self.bound: list[FakeSocket] = []
        self.failFor: set[str] = set()
        self.next = 10

    def __call__(self, address: ListenAddress) -> FakeSocket:
        if address.identity in self.failFor:
            raise ListenFailed(f"Cannot listen on {address.description}: address already in use.")
        self.next += 1
        sock = FakeSocket(self.next)
        self.bound.append(sock)
        return sock


class Harness:
    def __init__(self, test: SynchronousTestCase, reactor: FakeReactor | None = None) -> None:
        self.reactor = reactor if reactor is not None else FakeReactor()
        self.binder = FakeBinder()
        patchStatic(test, Listener, "_bindSocket", self.binder)
        self.closed: list[int] = []
        patchStatic(test, Listener, "_closeFileno", self.closed.append)
        patchStatic(test, GracefulService, "_closeInherited", self.closed.append)
        self.nonBlocking: list[int] = []
        patchStatic(test, Listener, "_setNonBlocking", self.nonBlocking.append)
        self.systemd: list[SystemdSocket] = []
        patchStatic(test, GracefulService, "_systemdSockets", lambda: self.systemd)
        self.service = GracefulService(reactor=self.reactor, handleSignals=False, environ={})
        self.resources: list[HeldResource] = []
        self.pumps: list[iosim.IOPump] = []

    def addEndpoint(self, description: str, **kw: Any) -> GracefulSiteService:
        resource = HeldResource()
        self.resources.append(resource)
        return self.service.addEndpoint(
            description, Site(resource, reactor=self.reactor), shutdownTimeout=SHUTDOWN_TIMEOUT, **kw
        )

    def connect(self, endpoint: GracefulSiteService) -> RawClient:
        server = endpoint.factory.buildProtocol(iosim.FakeAddress())
        client = RawClient()
        self.pumps.append(
            iosim.connect(server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), clock=self.reactor)
        )
        return client

    def send(self, client: RawClient, data: bytes) -> None:
        client.transport.write(data)  # type: ignore[union-attr]
        self.flush()

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


class GracefulSiteServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness(self)

    def test_bindsThenAdopts(self) -> None:
        """
        The library binds the socket itself and the reactor adopts it (so a
        stopped port never shuts down a socket a successor shares); the
        process's own copy is closed once adopted.
        """
        endpoint = self.h.addEndpoint("tcp:8080:interface=127.0.0.1")
        self.h.service.privilegedStartService()
        self.assertEqual(self.h.reactor.tcpServers, [])
        [(fileno, family, factory)] = self.h.reactor.adoptedPorts
        self.assertEqual(fileno, self.h.binder.bound[0].fileno())
        self.assertIs(factory, endpoint.factory)
        self.assertTrue(self.h.binder.bound[0].closed)

    def test_oneSiteOnTwoEndpoints(self) -> None:
        """
        One site can be served on two endpoints; each endpoint drains its
        own connections.
        """
        site = Site(HeldResource(), reactor=self.h.reactor)
        first = self.h.service.addEndpoint("tcp:8080", site)
        second = self.h.service.addEndpoint("tcp:8081", site)
        self.h.service.privilegedStartService()
        self.assertEqual(
            [factory for _, _, factory in self.h.reactor.adoptedPorts],
            [first.factory, second.factory],
        )
        self.h.connect(first)
        self.assertEqual((first.factory.connectionCount(), second.factory.connectionCount()), (1, 0))

    def test_startServiceListensWithoutPrivilegedStart(self) -> None:
        """
        A service started without L{privilegedStartService} (outside
        twistd) still listens, once.
        """
        self.h.addEndpoint("8080")
        self.h.service.startService()
        self.h.service.privilegedStartService()
        self.assertEqual(len(self.h.reactor.adoptedPorts), 1)

    def test_inheritedSocketAdopted(self) -> None:
        """
        An endpoint given an inherited descriptor adopts it instead of
        binding, then closes its own copy.
        """
        endpoint = self.h.addEndpoint("8080")
        endpoint.inheritedFileno = 7
        self.h.service.startService()
        self.assertEqual(self.h.reactor.adoptedPorts[0][0], 7)
        self.assertEqual(self.h.nonBlocking, [7])
        self.assertEqual(self.h.binder.bound, [])
        self.assertEqual(self.h.closed, [7])

    def test_systemdSocketByAddress(self) -> None:
        """
        A socket systemd passed for an endpoint's address is used instead of
        binding; one passed for no endpoint is closed once serving.
        """
        import socket as s

        self.h.systemd = [
            SystemdSocket(0, "web", 3, s.AF_INET6, "tcp6:8080:interface=::"),
            SystemdSocket(1, "other", 4, s.AF_INET, "tcp:9999:interface=127.0.0.1"),
        ]
        self.h.addEndpoint("8080")
        self.h.service.startService()
        self.assertEqual(self.h.reactor.adoptedPorts[0][0], 3)
        self.assertEqual(self.h.binder.bound, [])
        self.h.reactor.running = True
        self.h.service._reactorRunning()
        self.assertEqual(self.h.closed, [3, 4])

    def test_systemdSocketByName(self) -> None:
        import socket as s

        self.h.systemd = [SystemdSocket(0, "web", 5, s.AF_INET, "tcp:80:interface=0.0.0.0")]
        self.h.addEndpoint("systemd:domain=INET:name=web")
        self.h.service.startService()
        self.assertEqual(self.h.reactor.adoptedPorts[0][0], 5)

    def test_systemdSocketMissing(self) -> None:
        """
        A C{systemd:} endpoint with no such passed socket fails to listen,
        saying what to check.
        """
        self.h.addEndpoint("systemd:domain=INET:name=web")
        patchStatic(self, Listener, "_bindSocket", bindSocket)
        with self.assertRaises(ListenFailed) as caught:
            self.h.service.bind()
        self.assertIn("systemd passed no socket name=web", str(caught.exception))

    def test_bindFailureClosesOthers(self) -> None:
        """
        When one endpoint cannot bind, the sockets already bound are closed
        and the error names the endpoint.
        """
        self.h.addEndpoint("8080")
        self.h.addEndpoint("8081")
        self.h.binder.failFor.add("tcp:8081:interface=0.0.0.0")
        with self.assertRaises(ListenFailed) as caught:
            self.h.service.bind()
        self.assertIn("8081", str(caught.exception))
        self.assertTrue(self.h.binder.bound[0].closed)

    def test_sameAddressTwice(self) -> None:
        """
        Two endpoints on one address are refused: a successor could not tell
        their sockets apart.
        """
        self.h.addEndpoint("8080")
        with self.assertRaises(BadEndpoint) as caught:
            self.h.addEndpoint("tcp:8080")
        self.assertIn("same address", str(caught.exception))

    def test_rejectsNonResource(self) -> None:
        """
        Serving something that is neither a Site nor a resource fails at once
        with a message saying what to pass.
        """
        with self.assertRaises(TypeError) as caught:
            GracefulSiteService("8080", object(), reactor=self.h.reactor)  # type: ignore[arg-type]
        self.assertIn("WSGIResource", str(caught.exception))

    def test_resourceWrappedInSite(self) -> None:
        endpoint = GracefulSiteService("8080", HeldResource(), reactor=self.h.reactor)
        self.assertIsInstance(endpoint.site, Site)

    def test_standaloneStopDrains(self) -> None:
        """
        A L{GracefulSiteService} used alone drains when stopped.
        """
        endpoint = GracefulSiteService("8080", Site(HeldResource(), reactor=self.h.reactor), reactor=self.h.reactor)
        endpoint.startService()
        client = self.h.connect(endpoint)
        self.h.send(client, request("/held"))
        d = endpoint.stopService()
        self.assertNoResult(d)
        endpoint.site.resource.finishAll()
        self.h.flush()
        self.assertEqual(self.successResultOf(d).completed, 1)


class OrderedStopTests(SynchronousTestCase):
    """
    L{GracefulService.stopService} stops accepting everywhere at once, drains,
    runs hooks in order, then stops other children.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.a = self.h.addEndpoint("8080")
        self.b = self.h.addEndpoint("8081")
        self.h.service.startService()

    def test_stopsAcceptingEverywhereAtOnce(self) -> None:
        """
        Both ports stop listening before any drain has ended.
        """
        client = self.h.connect(self.a)
        self.h.send(client, request("/held"))
        ports = [self.a.port, self.b.port]
        d = self.h.service.stopService()
        self.assertEqual([p.listening for p in ports], [False, False])  # type: ignore[union-attr]
        self.assertNoResult(d)
        self.h.resources[0].finishAll()
        self.h.flush()
        self.successResultOf(d)

    def test_hooksRunInOrderAfterDrain(self) -> None:
        """
        Hooks run one after the other, in the order added, only after every
        endpoint has drained; a slow hook's Deferred is waited for.
        """
        calls: list[str] = []
        slow: Deferred[None] = Deferred()

        def first() -> Deferred[None]:
            calls.append("first")
            return slow

        self.h.service.addShutdownHook(first)
        self.h.service.addShutdownHook(calls.append, "second")
        client = self.h.connect(self.b)
        self.h.send(client, request("/held"))
        d = self.h.service.stopService()
        self.assertEqual(calls, [])
        self.h.resources[1].finishAll()
        self.h.flush()
        self.assertEqual(calls, ["first"])
        slow.callback(None)
        self.assertEqual(calls, ["first", "second"])
        self.successResultOf(d)

    def test_otherChildrenStopAfterHooks(self) -> None:
        """
        A non-endpoint child service stops after the hooks have run.
        """
        order: list[str] = []

        class Database(Service):
            def stopService(self) -> None:
                order.append("database stopped")
                super().stopService()

        Database().setServiceParent(self.h.service)
        self.h.service.addShutdownHook(order.append, "hook")
        self.successResultOf(self.h.service.stopService())
        self.assertEqual(order, ["hook", "database stopped"])
        self.assertFalse(self.h.service.running)

    def test_deadlineThenHooks(self) -> None:
        """
        A never-ending response is cut at the endpoint's deadline, then the
        hooks run.
        """
        calls: list[str] = []
        self.h.service.addShutdownHook(calls.append, "hook")
        client = self.h.connect(self.a)
        self.h.send(client, request("/held"))
        d = self.h.service.stopService()
        self.h.reactor.advance(AT_LEAST_SHUTDOWN_TIMEOUT)
        self.h.flush()
        self.successResultOf(d)
        self.assertEqual(calls, ["hook"])
        self.assertEqual(self.h.service.drainResults[0].abortedRequests, 1)

    def test_oneDrainFails(self) -> None:
        """
        An endpoint whose drain fails is logged; the other endpoint drains,
        the hooks run, and the stop is not reported clean.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        calls: list[str] = []
        self.h.service.addShutdownHook(calls.append, "hook")
        client = self.h.connect(self.b)
        self.h.send(client, request("/held"))
        self.a.drain = lambda *a: fail(RuntimeError("drain broke"))  # type: ignore[method-assign]
        d = self.h.service.stopService()
        self.h.resources[1].finishAll()
        self.h.flush()
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(calls, ["hook"])
        self.assertEqual([r.completed for r in self.h.service.drainResults], [1])
        (failed,) = [e for e in events if e.get("phase") == "drain-error"]
        self.assertEqual(failed["endpoint"], "8080")
        (stopped,) = [e for e in events if e.get("phase") == "stopped"]
        self.assertEqual((stopped["completed"], stopped["drainErrors"]), (1, 1))

    def test_whenDraining(self) -> None:
        """
        L{GracefulService.whenDraining} fires when the stop begins.
        """
        waiting = self.h.service.whenDraining()
        self.assertNoResult(waiting)
        self.h.service.stopService()
        self.successResultOf(waiting)
        self.successResultOf(self.h.service.whenDraining())

    def test_stopTwice(self) -> None:
        """
        A second stopService waits for the same stop.
        """
        client = self.h.connect(self.a)
        self.h.send(client, request("/held"))
        first = self.h.service.stopService()
        second = self.h.service.stopService()
        self.assertNoResult(second)
        self.h.resources[0].finishAll()
        self.h.flush()
        self.successResultOf(first)
        self.successResultOf(second)

    def test_cutShort(self) -> None:
        """
        L{GracefulService.cutShort} aborts the connections and skips the
        hooks still to run.
        """
        calls: list[str] = []
        self.h.service.addShutdownHook(calls.append, "hook")
        client = self.h.connect(self.a)
        self.h.send(client, request("/held"))
        d = self.h.service.stopService()
        self.h.service.cutShort()
        self.h.flush()
        self.successResultOf(d)
        self.assertEqual(calls, [])
        self.assertEqual([o.outcome for o in self.h.service.hookOutcomes], ["skipped"])


class FinalStopTests(SynchronousTestCase):
    """
    A final stop closes each listening socket before its drain begins.
    """

    def setUp(self) -> None:
        self.reactor = QueueingReactor()
        self.h = Harness(self, self.reactor)

        def observe(event: LogEvent) -> None:
            if event.get("phase") in ("drain-started", "drain-finished"):
                self.reactor.order.append(event["phase"])

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_listenerClosedBeforeDrainStarted(self) -> None:
        """
        The connections the kernel queued before the stop are accepted and
        drained, the listening socket is closed, and only then is
        C{drain-started} logged: a client that connects once it has seen
        C{drain-started} is refused, never queued and reset.
        """
        endpoint = self.h.addEndpoint("tcp:8080:interface=127.0.0.1")
        self.h.service.startService()
        port = self.reactor.ports[0]
        assert isinstance(port, QueueingPort)
        port.queued = 2
        d = self.h.service.stopService()
        self.assertEqual(self.reactor.order[:4], ["accepted", "accepted", "closed", "drain-started"])
        self.assertTrue(port.socket.closed)
        self.assertEqual(endpoint.factory.connectionCount(), 2)
        self.reactor.advance(AT_LEAST_SHUTDOWN_TIMEOUT)
        self.successResultOf(d)
        self.assertEqual(self.reactor.order[4:], ["drain-finished"])


class FakeSignals:
    """
    A fake C{signal} module: records handlers instead of installing them.
    """

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {}

    def getsignal(self, signum: int) -> Any:
        return self.handlers.get(signum, signal.SIG_DFL)

    def signal(self, signum: int, handler: Any) -> Any:
        previous = self.getsignal(signum)
        self.handlers[signum] = handler
        return previous


class StopSignalTests(SynchronousTestCase):
    """
    The first SIGTERM or SIGINT goes to the reactor's own handler; one that
    arrives during the drain cuts it short.
    """

    def setUp(self) -> None:
        self.h = Harness(self)
        self.signals = FakeSignals()
        self.reactorHandled: list[int] = []
        self.signals.handlers[signal.SIGTERM] = lambda s, f: self.reactorHandled.append(s)

        self.patch(GracefulService, "_signalModule", self.signals)
        self.h.service._handleSignals = True
        self.endpoint = self.h.addEndpoint("8080")
        self.h.service.startService()
        self.h.reactor.callFromThread = lambda f, *a: f(*a)  # type: ignore[method-assign]
        self.h.reactor.running = True
        self.h.service._reactorRunning()

    def test_firstSignalToReactor(self) -> None:
        self.signals.handlers[signal.SIGTERM](signal.SIGTERM, None)
        self.assertEqual(self.reactorHandled, [signal.SIGTERM])
        self.assertFalse(self.h.service.stopping)

    def test_secondSignalCutsShort(self) -> None:
        """
        A signal during the drain aborts what is left and logs why.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        client = self.h.connect(self.endpoint)
        self.h.send(client, request("/held"))
        d = self.h.service.stopService()
        self.signals.handlers[signal.SIGINT](signal.SIGINT, None)
        self.h.flush()
        self.successResultOf(d)
        self.assertIsNotNone(client.closed)
        self.assertEqual([e["signal"] for e in events if e.get("phase") == "cut-short"], ["SIGINT"])

    def test_withoutReactorHandler(self) -> None:
        """
        With no Python handler before ours, the first signal stops the
        reactor itself.
        """
        self.h.reactor.stop = lambda: self.reactorHandled.append(0)  # type: ignore[method-assign]
        self.signals.handlers[signal.SIGINT](signal.SIGINT, None)
        self.assertEqual(self.reactorHandled, [0])


READY_TIMEOUT = 10.0
PROBATION = 2.0
SUCCESSOR_ARGV = ["/venv/bin/twistd", "-n", "graceful", "--port", "tcp:8080:interface=127.0.0.1"]
SERVING_PID = 6001
"""
The successor's serving pid: a daemonizing twistd serves from a grandchild
of the process spawned.
"""


class RestartTests(SynchronousTestCase):
    """
    L{GracefulService.restart} end to end, with the successor played by the
    test through a fake C{spawnProcess}.
    """

    def setUp(self) -> None:
        self.reactor = SpawningReactor()
        self.h = Harness(self, self.reactor)
        self.killed: list[tuple[int, int]] = []
        patchStatic(self, GracefulService, "_kill", lambda pid, signum: self.killed.append((pid, signum)))
        self.h.service = GracefulService(
            reactor=self.reactor, handleSignals=False, environ={}, argv=SUCCESSOR_ARGV, readyTimeout=READY_TIMEOUT,
            probation=PROBATION,
        )
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, *descriptions: str) -> list[GracefulSiteService]:
        """
        Serve C{descriptions} in a process that has no predecessor, with its
        reactor running.
        """
        endpoints = [self.h.addEndpoint(d) for d in descriptions]
        self.reactor.running = True
        self.h.service.startService()
        return endpoints

    def restart(self) -> tuple[Deferred[Any], FakeProcess, int, int]:
        """
        Ask for a restart; return its result, the successor, and the
        successor's ready and lifeline descriptors.
        """
        d = self.h.service.restart()
        [process] = self.reactor.processes[-1:]
        return d, process, int(process.env["TWISTED_GRACEFUL_READY_FD"]), int(process.env["TWISTED_GRACEFUL_LIFELINE_FD"])

    def say(self, process: FakeProcess, readyFD: int, state: str, pid: int = SERVING_PID, **fields: Any) -> None:
        process.fromChild(readyFD, json.dumps(dict(fields, state=state, pid=pid)).encode() + b"\n")

    def phases(self) -> list[str]:
        return [e["phase"] for e in self.events if "phase" in e]

    def test_successorReadyHandsOver(self) -> None:
        """
        The successor runs the same command with the listening socket at
        descriptor 3; once it reports ready, this process pauses its port
        (keeping it), tells the successor on the lifeline, and drains; once
        the drain and the probation are over, the restart fires with the
        successor's serving pid and the time it took, the port is closed
        for good, and the reactor stops.
        """
        [endpoint] = self.start("tcp:8080:interface=127.0.0.1")
        port = self.reactor.ports[0]
        d, process, readyFD, lifelineFD = self.restart()
        self.assertNoResult(d)
        self.assertEqual(process.executable, "/bin/sh")
        self.assertEqual(process.args[:2], ["/bin/sh", "-c"])
        self.assertEqual(process.args[3:], SUCCESSOR_ARGV)
        self.assertEqual(process.path, os.getcwd())
        self.assertEqual(json.loads(process.env["TWISTED_GRACEFUL_SOCKETS"]), {endpoint.identity: 3})
        self.assertEqual(process.env["TWISTED_GRACEFUL_PARENT_PID"], str(os.getpid()))
        self.assertEqual(process.env["TWISTED_GRACEFUL_GENERATION"], "2")
        # The successor's end of the hand-off channel follows the pipes (it
        # is closed here once the successor is spawned).
        handoff = process.childFDs.pop(6)
        self.assertIsInstance(handoff, int)
        self.assertEqual(process.env["TWISTED_GRACEFUL_HANDOFF_FD"], "6")
        self.assertEqual(
            process.childFDs, {0: 0, 1: 1, 2: 2, 3: port.fileno(), readyFD: "r", lifelineFD: "w"}
        )
        self.assertEqual((readyFD, lifelineFD), (4, 5))

        self.say(process, readyFD, "starting")
        self.reactor.advance(1.5)
        self.assertNoResult(d)
        self.assertTrue(port.listening)
        self.assertEqual(process.written, {})

        self.say(process, readyFD, "ready", generation=2)
        self.assertNoResult(d)
        self.assertEqual((port.listening, port.reading, port.stopListeningCalls), (True, False, 0))
        self.assertEqual(process.written, {lifelineFD: b'{"state": "handed-over"}\n'})
        self.successResultOf(self.h.service.whenDraining())
        self.reactor.advance(PROBATION - 0.001)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        outcome = self.successResultOf(d)
        self.assertEqual((outcome.pid, outcome.elapsed, outcome.fields["generation"]), (SERVING_PID, 1.5, 2))
        self.assertEqual((port.listening, port.stopListeningCalls), (False, 1))
        self.assertIsNone(endpoint.port)
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.killed, [])
        self.assertEqual(
            [p for p in self.phases() if p.startswith(("restart", "child", "handed", "confirmed"))],
            ["restart-requested", "child-spawned", "child-ready", "handed-over", "confirmed"],
        )
        self.failureResultOf(self.h.service.restart(), NotReadyToRestart)
        self.assertEqual(len(self.reactor.processes), 1)

    def test_successorExitsBeforeReady(self) -> None:
        """
        A successor that exits before it is ready fails the restart with
        L{ChildExitedEarly}, saying how it ended and how far it got; this
        process keeps listening and can restart again.
        """
        self.start("tcp:8080:interface=127.0.0.1")
        port = self.reactor.ports[0]
        d, process, readyFD, lifelineFD = self.restart()
        self.say(process, readyFD, "starting", pid=process.pid)  # type: ignore[arg-type]
        process.exit(Failure(ProcessTerminated(exitCode=3)))
        failure = self.failureResultOf(d, ChildExitedEarly)
        self.assertIn("exit status 3", str(failure.value))
        self.assertIn("while starting", str(failure.value))
        self.assertEqual((port.listening, port.stopListeningCalls), (True, 0))
        self.assertEqual(process.written, {})
        self.reactor.advance(DEFAULT_KILL_GRACE + 1)
        self.assertFalse(self.reactor.hasStopped)
        self.assertEqual(self.killed, [], "an exited process is never signalled")
        [failed] = [e for e in self.events if e.get("phase") == "restart-failed"]
        self.assertEqual(failed["error"], "ChildExitedEarly")

        again, second, _, _ = self.restart()
        self.assertNoResult(again)
        self.assertIsNot(second, process)

    def test_successorMissesReadyDeadline(self) -> None:
        """
        A successor that is not ready within the ready timeout fails the
        restart with L{ChildReadyTimeout}; it is sent SIGTERM, then SIGKILL
        after the kill grace, and this process keeps listening.
        """
        self.start("tcp:8080:interface=127.0.0.1")
        port = self.reactor.ports[0]
        d, process, readyFD, _ = self.restart()
        self.say(process, readyFD, "starting")
        self.reactor.advance(READY_TIMEOUT - 0.01)
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        failure = self.failureResultOf(d, ChildReadyTimeout)
        self.assertIn(f"within {READY_TIMEOUT:g} s", str(failure.value))
        pids = {SERVING_PID, process.pid}
        self.assertEqual(sorted(self.killed), sorted((pid, signal.SIGTERM) for pid in pids))
        self.reactor.advance(DEFAULT_KILL_GRACE)
        self.assertEqual(
            sorted(self.killed), sorted([(pid, signal.SIGTERM) for pid in pids] + [(pid, signal.SIGKILL) for pid in pids])
        )
        self.assertEqual((port.listening, port.stopListeningCalls), (True, 0))
        self.assertFalse(self.reactor.hasStopped)
        self.say(process, readyFD, "ready")
        self.assertEqual(process.written, {}, "a successor that came too late is not handed over to")

    def test_spawnFails(self) -> None:
        """
        A successor that cannot be started fails the restart with
        L{ChildExitedEarly} on the next reactor turn, naming the command.
        """
        self.start("8080")
        self.reactor.failSpawn = OSError(2, "No such file or directory")
        d = self.h.service.restart()
        self.assertNoResult(d)
        self.reactor.advance(0)
        failure = self.failureResultOf(d, ChildExitedEarly)
        self.assertIn("Cannot start the successor", str(failure.value))
        self.assertIn("No such file or directory", str(failure.value))
        self.assertTrue(self.reactor.ports[0].listening)

    def test_unixSocketHandedOver(self) -> None:
        """
        At the hand-over a UNIX port stops reading and closes this
        process's descriptor without stopping listening, which would unlink
        the socket file the successor now serves; a TCP port beside it
        stops listening.  Each is handed to the successor by identity.
        """
        path = os.path.abspath("app.sock")
        tcp, unix = self.start("tcp:8080:interface=127.0.0.1", f"unix:{path}")
        tcpPort, unixPort = self.reactor.ports
        d, process, readyFD, _ = self.restart()
        self.assertEqual(
            json.loads(process.env["TWISTED_GRACEFUL_SOCKETS"]), {tcp.identity: 3, f"unix:{path}": 4}
        )
        self.assertEqual((process.childFDs[3], process.childFDs[4]), (tcpPort.fileno(), unixPort.fileno()))
        self.assertEqual(unix.site.numPorts, 1)
        self.say(process, readyFD, "ready")
        self.reactor.advance(PROBATION)
        self.successResultOf(d)
        self.assertEqual(unixPort.stopListeningCalls, 0)
        self.assertFalse(unixPort.reading)
        self.assertTrue(unixPort.socket.closed)
        self.assertEqual(unix.site.numPorts, 0)
        self.assertEqual((tcpPort.stopListeningCalls, tcpPort.listening), (1, False))


class RollbackTests(SynchronousTestCase):
    """
    A successor that dies after its ready report, before it is confirmed:
    the service takes its port and its drain back and serves on.
    """

    def setUp(self) -> None:
        self.reactor = SpawningReactor()
        self.h = Harness(self, self.reactor)
        patchStatic(self, GracefulService, "_kill", lambda pid, signum: None)
        self.notified: list[tuple[str, ...]] = []
        notifier = Notifier({})
        notifier.notify = lambda *lines: self.notified.append(lines)  # type: ignore[method-assign]
        self.h.service = GracefulService(
            reactor=self.reactor, handleSignals=False, environ={}, argv=SUCCESSOR_ARGV, probation=PROBATION,
            pidFile=os.path.abspath("app.pid"), notifier=notifier,
        )
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        [self.endpoint] = [self.h.addEndpoint("tcp:8080:interface=127.0.0.1")]
        self.reactor.running = True
        self.h.service.startService()
        self.port = self.reactor.ports[0]

    def handOver(self) -> tuple[Deferred[Any], FakeProcess]:
        d = self.h.service.restart()
        [process] = self.reactor.processes[-1:]
        readyFD = int(process.env["TWISTED_GRACEFUL_READY_FD"])
        process.fromChild(readyFD, json.dumps({"state": "ready", "pid": SERVING_PID}).encode() + b"\n")
        with open("app.pid", "w") as f:
            f.write(f"{SERVING_PID}\n")  # What the successor does.
        return d, process

    def test_rollBack(self) -> None:
        """
        The port reads again, the drain is taken back, the restart fails
        with L{SuccessorDied}; the pid file names this process again, the
        status file says rolled back, and systemd hears C{MAINPID} and
        C{READY=1}; the reactor keeps running and no hook runs.
        """
        ran: list[str] = []
        self.h.service.addShutdownHook(lambda: ran.append("hook"))
        d, process = self.handOver()
        self.assertFalse(self.port.reading)
        self.assertTrue(self.endpoint.factory.draining)
        self.reactor.advance(1.5)
        process.exit(Failure(ProcessTerminated(exitCode=1)))
        failure = self.failureResultOf(d, SuccessorDied)
        self.assertIn("rolled back", str(failure.value))
        self.assertEqual((self.port.reading, self.port.stopListeningCalls), (True, 0))
        self.assertFalse(self.endpoint.factory.draining)
        self.assertNoResult(self.h.service.whenDraining())
        with open("app.pid") as f:
            self.assertEqual(int(f.read()), os.getpid())
        status = readStatus("app.pid.status")
        assert status is not None
        self.assertEqual((status["state"], status["pid"]), ("serving", os.getpid()))
        self.assertEqual(
            {k: status["lastRestart"][k] for k in ("outcome", "pid", "served")},
            {"outcome": "rolled-back", "pid": SERVING_PID, "served": 1.5},
        )
        self.assertEqual(self.notified[-1][:2], (f"MAINPID={os.getpid()}", "READY=1"))
        self.reactor.advance(PROBATION * 2)
        self.assertFalse(self.reactor.hasStopped)
        self.assertEqual(ran, [])
        self.assertIn("rolled-back", [e.get("phase") for e in self.events])

    def test_restartAgain(self) -> None:
        """
        After a rollback, a restart to a good release hands over for good.
        """
        d, process = self.handOver()
        process.exit(Failure(ProcessTerminated(exitCode=1)))
        self.failureResultOf(d, SuccessorDied)
        d, process = self.handOver()
        self.reactor.advance(PROBATION)
        self.assertEqual(self.successResultOf(d).pid, SERVING_PID)
        self.reactor.advance(0)
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.port.stopListeningCalls, 1)

    def test_stopOnProbation(self) -> None:
        """
        A stop during the probation keeps the successor: the port is closed
        for good, the restart fires, the hooks run, and the pid file is
        left to the successor.
        """
        ran: list[str] = []
        self.h.service.addShutdownHook(lambda: ran.append("hook"))
        d, process = self.handOver()
        stopped = self.h.service.stopService()
        self.successResultOf(d)
        self.assertEqual(self.port.stopListeningCalls, 1)
        self.reactor.advance(1)
        self.successResultOf(stopped)
        self.assertEqual(ran, ["hook"])
        with open("app.pid") as f:
            self.assertEqual(int(f.read()), SERVING_PID)
