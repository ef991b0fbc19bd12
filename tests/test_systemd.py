"""
Tests for L{twisted_graceful._systemd}.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful._systemd import SystemdSocket, systemdSockets


class MatchTests(SynchronousTestCase):
    def test_matches(self) -> None:
        passed = SystemdSocket(0, "web", 3, socket.AF_INET6, "tcp6:8080:interface=::")
        for identity in ["tcp6:8080:interface=::", "systemd:name=web", "systemd:index=0", "tcp:8080:interface=0.0.0.0"]:
            self.assertTrue(passed.matches(identity), identity)
        for identity in ["tcp:8081:interface=0.0.0.0", "systemd:name=api", "systemd:index=1", "tcp:8080:interface=127.0.0.1"]:
            self.assertFalse(passed.matches(identity), identity)


class SocketsTests(SynchronousTestCase):
    def test_namesByPosition(self) -> None:
        """
        Names from LISTEN_FDNAMES go with the descriptors in order; a count
        that differs drops the names; descriptors that are not listening
        sockets are left out.
        """
        identities = {3: "tcp:80:interface=0.0.0.0", 4: "unix:/run/a.sock", 5: None}
        found = systemdSockets(
            {"LISTEN_FDNAMES": "web:admin:junk"},
            descriptors=lambda: iter([3, 4, 5]),
            identify=identities.get,
            familyOf=lambda fd: socket.AF_INET if fd == 3 else socket.AF_UNIX,
        )
        self.assertEqual([(s.name, s.fileno) for s in found], [("web", 3), ("admin", 4)])
        found = systemdSockets(
            {"LISTEN_FDNAMES": "web"},
            descriptors=lambda: iter([3, 4]),
            identify=identities.get,
            familyOf=lambda fd: socket.AF_INET,
        )
        self.assertEqual([s.name for s in found], [None, None])
