"""
Tests for L{twisted_graceful._assign.assignSockets}.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._assign import Wanted, assignSockets
from twisted_graceful._systemd import SystemdSocket

INET, INET6, UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX
A = Wanted("tcp:8080:interface=127.0.0.1", INET)
B = Wanted("unix:/run/app.sock", UNIX)


def passed(index: int, fileno: int, identity: str, name: str | None = None, family: socket.AddressFamily = INET) -> SystemdSocket:
    return SystemdSocket(index, name, fileno, family, identity)


class AssignSocketsTests(SynchronousTestCase):
    def test_byIdentity(self) -> None:
        """
        Each endpoint gets the predecessor's socket of its identity,
        whatever the order they were announced in.
        """
        result = assignSockets([A, B], {B.identity: (4, UNIX), A.identity: (3, INET)})
        self.assertEqual(result.fromParent, {A.identity: 3, B.identity: 4})
        self.assertEqual(result.unused, [])

    def test_wrongFamilyOrUnknownUnused(self) -> None:
        """
        A socket of another family than its endpoint's, or of an identity
        no endpoint has (a release that dropped a --port), is unused, as are
        the sockets refused already.
        """
        result = assignSockets([A], {A.identity: (3, INET6), "tcp:9090:interface=0.0.0.0": (4, INET)}, refused=[9])
        self.assertEqual(result.fromParent, {})
        self.assertEqual(sorted(result.unused), [3, 4, 9])

    def test_systemdForTheOthers(self) -> None:
        """
        An endpoint without a predecessor's socket takes the first systemd
        socket that matches it; a systemd socket nobody takes is unused and
        reported.
        """
        mine = passed(0, 3, A.identity)
        other = passed(1, 4, "tcp:9999:interface=0.0.0.0")
        named = passed(2, 5, "unix:/run/x.sock", name="web", family=UNIX)
        result = assignSockets(
            [A, Wanted("systemd:name=web", UNIX)], {}, systemd=[mine, other, named]
        )
        self.assertEqual(result.fromSystemd, {A.identity: mine, "systemd:name=web": named})
        self.assertEqual(result.unused, [4])
        self.assertEqual(result.ignoredSystemd, [other])

    def test_predecessorBeforeSystemd(self) -> None:
        """
        An endpoint the predecessor's socket serves does not take systemd's
        too: that one is unused.
        """
        result = assignSockets([A], {A.identity: (7, INET)}, systemd=[passed(0, 3, A.identity)])
        self.assertEqual(result.fromParent, {A.identity: 7})
        self.assertEqual(result.fromSystemd, {})
        self.assertEqual(result.unused, [3])

    def test_systemdMatchesOnce(self) -> None:
        """
        Two systemd sockets matching one endpoint: the first is taken.
        """
        first, second = passed(0, 3, A.identity), passed(1, 4, A.identity)
        result = assignSockets([A], {}, systemd=[first, second])
        self.assertEqual(result.fromSystemd, {A.identity: first})
        self.assertEqual(result.unused, [4])
