"""
Tests for L{twisted_graceful._endpoint}.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import BadEndpoint
from twisted_graceful._endpoint import _bindMessage, parseEndpoint


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

    def test_sslMissingFiles(self) -> None:
        with self.assertRaises(BadEndpoint) as caught:
            parseEndpoint("ssl:8443:privateKey=/nonexistent/key.pem:certKey=/nonexistent/cert.pem")
        self.assertIn("nonexistent", str(caught.exception))


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
