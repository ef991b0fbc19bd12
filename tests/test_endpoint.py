"""
Tests for L{twisted_graceful._endpoint}.
"""

from __future__ import annotations

import socket

from hypothesis import example, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from twisted_graceful import BadEndpoint
from twisted_graceful._endpoint import ListenAddress, _bindMessage, _parseCommon, _parseWithTwisted, parseEndpoint


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
