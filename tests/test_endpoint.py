"""
Tests for L{twisted_graceful._endpoint}.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path
from unittest import SkipTest, skipIf

from hypothesis import example, given, settings, strategies as st
import twisted.test as twistedTests
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from twisted_graceful import BadEndpoint, GracefulSiteService, ListenFailed, MissingExtra
from twisted_graceful._endpoint import (
    ListenAddress,
    _bindMessage,
    _parseCommon,
    _parseWithTwisted,
    adoptSocket,
    bindSocket,
    parseEndpoint,
)


class ParseEndpointTests(SynchronousTestCase):
    """
    L{parseEndpoint} reads C{--port} values with Twisted's parser and names
    each socket by its address.
    """

    def test_bareNumber(self) -> None:
        address = parseEndpoint("8080")
        self.assertEqual(
            (address.identity, address.family, address.address, address.scheme),
            ("tcp:8080:interface=0.0.0.0", socket.AF_INET, ("0.0.0.0", 8080), "tcp"),
        )

    def test_tcpInterfaceAndBacklog(self) -> None:
        address = parseEndpoint("tcp:0:interface=127.0.0.1:backlog=7")
        self.assertEqual((address.identity, address.backlog), ("tcp:0:interface=127.0.0.1", 7))

    def test_sameAddressSameIdentity(self) -> None:
        """
        Two spellings of one address have one identity.
        """
        self.assertEqual(parseEndpoint("8080").identity, parseEndpoint("tcp:port=8080").identity)

    def test_tcp6(self) -> None:
        address = parseEndpoint(r"tcp6:8080:interface=\:\:1")
        self.assertEqual((address.identity, address.family), ("tcp6:8080:interface=::1", socket.AF_INET6))

    def test_unixAbsolutePath(self) -> None:
        address = parseEndpoint("unix:app.sock:mode=600")
        self.assertTrue(address.identity.startswith("unix:/"))
        self.assertEqual((address.family, address.unixMode), (socket.AF_UNIX, 0o600))

    def test_invalid(self) -> None:
        """
        A description that does not parse is refused with the reason and
        the accepted forms.
        """
        for bad in ["tcp:abc", "nosuchtype:80", ""]:
            with self.assertRaises(BadEndpoint) as caught:
                parseEndpoint(bad)
            self.assertIn("Expected tcp:PORT", str(caught.exception))

    def test_unsupportedType(self) -> None:
        """
        Endpoint types whose socket the library cannot bind are refused.
        """
        with self.assertRaises(BadEndpoint) as caught:
            parseEndpoint("stdio:")
        self.assertIn("Cannot serve 'stdio:'", str(caught.exception))

    def test_sslWithoutTLS(self) -> None:
        """
        An C{ssl:} port without pyOpenSSL names the extra to install, and
        does not blame the description.
        """
        import twisted.internet.endpoints

        def noOpenSSL(reactor: object, description: str) -> object:
            raise ModuleNotFoundError("No module named 'OpenSSL'", name="OpenSSL")

        self.patch(twisted.internet.endpoints, "serverFromString", noOpenSSL)
        with self.assertRaises(MissingExtra) as caught:
            parseEndpoint("ssl:8443:privateKey=key.pem")
        self.assertEqual(
            str(caught.exception),
            "'ssl:8443:privateKey=key.pem' needs TLS (ssl: ports), which is not installed "
            "(no module named 'OpenSSL'): pip install 'twisted-graceful[tls]'",
        )

    def test_sslMissingFiles(self) -> None:
        with self.assertRaises(BadEndpoint) as caught:
            parseEndpoint("ssl:8443:privateKey=/nonexistent/key.pem:certKey=/nonexistent/cert.pem")
        self.assertIn("nonexistent", str(caught.exception))


class ALPNTests(SynchronousTestCase):
    """
    An C{ssl:} endpoint names the protocols it serves in ALPN, so that a
    client that offers ALPN (browsers, curl) completes the handshake.
    """

    def handshake(self, description: str, offered: list[bytes]) -> object:
        """
        Connect a TLS client offering C{offered} to C{description}'s TLS
        options serving a L{DrainingFactory}, in memory; the protocol
        negotiated, or the client's failure.
        """
        from twisted.internet.protocol import Protocol
        from twisted.internet.ssl import CertificateOptions
        from twisted.internet.testing import MemoryReactorClock
        from twisted.protocols.tls import TLSMemoryBIOFactory
        from twisted.test.iosim import connect, makeFakeClient, makeFakeServer
        from twisted.web.server import Site

        from twisted_graceful import DrainingFactory

        clock = MemoryReactorClock()
        address = parseEndpoint(description)
        served = TLSMemoryBIOFactory(
            address.tlsContextFactory, False, DrainingFactory(Site(Resource(), reactor=clock), clock)
        )
        server = served.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8443))
        lost: list[object] = []

        class Client(Protocol):
            def connectionLost(self, reason: object) -> None:
                lost.append(reason)

        client = TLSMemoryBIOFactory(
            CertificateOptions(acceptableProtocols=offered), True, Factory.forProtocol(Client)
        ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 8443))
        connect(server, makeFakeServer(server), client, makeFakeClient(client))
        return lost[0] if lost else client.negotiatedProtocol

    def test_http11(self) -> None:
        """
        A client offering C{http/1.1} by ALPN gets it, with and without
        HTTP/2 installed, and with a particular TLS method.
        """
        import twisted.web.http

        pem = Path(twistedTests.__file__).parent / "server.pem"
        for enabled in [True, False]:
            self.patch(twisted.web.http, "H2_ENABLED", enabled)
            for description in [f"ssl:0:privateKey={pem}", f"ssl:0:privateKey={pem}:sslmethod=SSLv23_METHOD"]:
                self.assertEqual(self.handshake(description, [b"http/1.1"]), b"http/1.1", (enabled, description))

    def test_h2(self) -> None:
        """
        A client offering C{h2} first gets it when HTTP/2 is installed, and
        C{http/1.1} when it is not.
        """
        import twisted.web.http

        pem = Path(twistedTests.__file__).parent / "server.pem"
        for enabled, chosen in [(True, b"h2"), (False, b"http/1.1")]:
            self.patch(twisted.web.http, "H2_ENABLED", enabled)
            self.assertEqual(self.handshake(f"ssl:0:privateKey={pem}", [b"h2", b"http/1.1"]), chosen)


class BindMessageTests(SynchronousTestCase):
    def test_inUse(self) -> None:
        """
        The message for an address in use names the endpoint and the fix.
        """
        import errno

        message = _bindMessage(parseEndpoint("8080"), OSError(errno.EADDRINUSE, "in use"))
        self.assertEqual(
            message,
            "Cannot listen on 8080 (0.0.0.0 port 8080): address already in use. "
            "Stop the other server, or choose another port.",
        )

    def test_permission(self) -> None:
        import errno

        message = _bindMessage(parseEndpoint("80"), OSError(errno.EACCES, "denied"))
        self.assertIn("CAP_NET_BIND_SERVICE", message)


class FastPathAgreesWithTwistedTests(SynchronousTestCase):
    """
    The start-up fast path for C{tcp:}, C{tcp6:} and C{unix:} gives exactly
    what Twisted's own parser gives, for any description.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(["tcp", "tcp6", "unix"]),
        st.lists(
            st.one_of(
                st.from_regex(r"\A[0-9]{1,5}\Z"),
                st.sampled_from(["interface=127.0.0.1", r"interface=\:\:1", "backlog=7", "port=80",
                                 "mode=600", "lockfile=0", "address=a.sock", "bogus=1", "12x", r"a\:b", "", "=", "x=y=z"]),
            ),
            max_size=4,
        ),
    )
    # Every default, and each parameter by position and by name.
    @example("tcp", ["80"])
    @example("tcp6", ["80"])
    @example("unix", ["a.sock"])
    @example("tcp", ["80", "127.0.0.1", "7"])
    @example("tcp6", ["80", "7", r"\:\:1"])
    @example("unix", ["a.sock", "600", "7", "0"])
    @example("tcp", ["port=80", "backlog=7", "interface=127.0.0.1"])
    @example("unix", ["address=a.sock", "backlog=7", "mode=600"])
    def test_agree(self, kind: str, parts: list[str]) -> None:
        """
        Every description the fast path accepts parses to the same
        L{ListenAddress} (identity, family, address, backlog, mode) through
        Twisted's parser; every description it refuses, Twisted refuses too.
        """
        text = ":".join([kind, *parts])
        fast = _parseCommon(text, text)
        try:
            twisted: ListenAddress | None = _parseWithTwisted(text, text)
        except BadEndpoint:
            twisted = None
        if fast is None:
            self.assertIsNone(twisted, f"{text}: the fast path refused what Twisted accepts")
        else:
            self.assertEqual(fast, twisted, text)

    def test_interfaceAgrees(self) -> None:
        for text, host in [("tcp:80", "0.0.0.0"), ("tcp:80:interface=10.0.0.1", "10.0.0.1"), ("tcp6:80", "::"),
                           (r"tcp6:80:interface=\:\:1", "::1"), ("tcp:80:127.0.0.1:7", "127.0.0.1")]:
            address = _parseCommon(text, text)
            assert address is not None
            self.assertEqual(address.address[0], host, text)


def listenBacklog(sock: socket.socket) -> int:
    """
    The listen queue length the kernel gives the listening TCP socket
    C{sock}, read by C{inet_diag} as C{ss -l} shows it (Send-Q).
    """
    NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, NLMSG_DONE, TCP_LISTEN = 4, 20, 3, 10
    family, port = sock.family, sock.getsockname()[1]
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN) + bytes(48)
    header = struct.pack("=IHHII", 16 + len(request), SOCK_DIAG_BY_FAMILY, 0x301, 1, 0)
    found: list[int] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as netlink:
        netlink.send(header + request)
        while True:
            data, offset = netlink.recv(1 << 16), 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == NLMSG_DONE:
                    assert len(found) == 1, f"{len(found)} listening sockets on port {port}"
                    return found[0]
                # inet_diag_msg: family..retrans, sockid (sport first), expires, rqueue, wqueue.
                (sport,) = struct.unpack_from("!H", data, offset + 20)
                (wqueue,) = struct.unpack_from("=I", data, offset + 16 + 4 + 48 + 8)
                if sport == port:
                    found.append(wqueue)
                offset += (length + 3) & ~3


class AdoptedPort:
    """
    A port adopted as Twisted's reactor adopts one: it holds its own socket
    object for a duplicate of the descriptor (C{Port.socket}).
    """

    def __init__(self, fileno: int, family: socket.AddressFamily) -> None:
        self.socket = socket.fromfd(fileno, family, socket.SOCK_STREAM)

    def getHost(self) -> IPv4Address:
        host, port = self.socket.getsockname()[:2]
        return IPv4Address("TCP", host, port)


class AdoptingReactor:
    """
    Adopts listening descriptors into L{AdoptedPort}s.
    """

    def __init__(self) -> None:
        self.ports: list[AdoptedPort] = []

    def adoptStreamPort(self, fileno: int, family: socket.AddressFamily, factory: object) -> AdoptedPort:
        port = AdoptedPort(fileno, family)
        self.ports.append(port)
        return port

    def close(self) -> None:
        for port in self.ports:
            port.socket.close()


@skipIf(not sys.platform.startswith("linux"), "reads the listen queue through Linux's inet_diag")
class BacklogTests(SynchronousTestCase):
    """
    C{backlog=} sets the kernel's listen queue of the socket, on the first
    start and after a restart that changed it; Twisted's default is 50.
    """

    def bound(self, description: str) -> socket.socket:
        sock = bindSocket(parseEndpoint(description))
        self.addCleanup(sock.close)
        return sock

    def test_bound(self) -> None:
        self.assertEqual(listenBacklog(self.bound("tcp:0:interface=127.0.0.1:backlog=7")), 7)
        self.assertEqual(listenBacklog(self.bound("tcp:0:interface=127.0.0.1")), 50)

    def test_boundIPv6(self) -> None:
        if not socket.has_ipv6:
            raise SkipTest("no IPv6")
        try:
            sock = self.bound(r"tcp6:0:interface=\:\:1:backlog=9")
        except ListenFailed:
            raise SkipTest("no ::1")
        self.assertEqual(listenBacklog(sock), 9)

    def test_inheritedGetsNewBacklog(self) -> None:
        """
        A successor whose C{backlog=} differs from its predecessor's sets it
        on the socket it inherited.
        """
        old = self.bound("tcp:0:interface=127.0.0.1:backlog=5")
        port = old.getsockname()[1]
        reactor = AdoptingReactor()
        self.addCleanup(reactor.close)
        adoptSocket(reactor, parseEndpoint(f"tcp:{port}:interface=127.0.0.1:backlog=9"), old.fileno(), Factory(),
                    applyBacklog=True)
        self.assertEqual(listenBacklog(old), 9)

    def test_serviceAppliesBacklog(self) -> None:
        """
        L{GracefulSiteService} sets its backlog on a socket from a
        predecessor, and keeps the one systemd gave a socket it passed
        (C{Backlog=} of the socket unit).
        """
        for fromSystemd, expected in [(False, 9), (True, 5)]:
            old = self.bound("tcp:0:interface=127.0.0.1:backlog=5")
            reactor = AdoptingReactor()
            self.addCleanup(reactor.close)
            service = GracefulSiteService(
                f"tcp:{old.getsockname()[1]}:interface=127.0.0.1:backlog=9", Resource(), reactor=reactor
            )
            self.patch(service.listener, "_closeFileno", lambda fileno: None)
            service.inheritedFileno, service.fromSystemd = os.dup(old.fileno()), fromSystemd
            self.addCleanup(os.close, service.inheritedFileno)
            service.privilegedStartService()
            self.assertEqual(listenBacklog(old), expected, f"fromSystemd={fromSystemd}")
