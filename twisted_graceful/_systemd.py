# -*- test-case-name: tests.test_systemd -*-
"""
Sockets passed by systemd socket activation (C{LISTEN_FDS}, C{LISTEN_PID},
C{LISTEN_FDNAMES}).

Importing C{twisted.internet.endpoints} reads systemd's variables and
removes C{LISTEN_FDS} and C{LISTEN_PID} from the environment: when it has,
the sockets are found through Twisted's own public C{systemd:} endpoint
parser; when it has not (it is not loaded at start-up, to start faster),
through L{twisted.python.systemd.ListenFDs}.  Each socket is described by the address it is bound to, so that
C{--port 8080} uses a socket systemd bound to port 8080.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Callable, Iterator, Mapping

from attrs import frozen

from ._inherit import listeningFamily, socketIdentity

MAX_SOCKETS = 1024


@frozen
class SystemdSocket:
    """
    One socket systemd passed.

    @ivar index: Its position among the passed descriptors.
    @ivar name: Its C{FileDescriptorName}, or L{None}.
    @ivar fileno: The descriptor.
    @ivar family: Its address family.
    @ivar identity: The identity of the address it is bound to, as
        L{parseEndpoint} would give it.
    """

    index: int
    name: str | None
    fileno: int
    family: socket.AddressFamily
    identity: str

    def matches(self, identity: str) -> bool:
        """
        Whether an endpoint of this identity should use this socket: the
        same address, or C{systemd:name=...} / C{systemd:index=...} naming
        it.  A socket on all IPv6 interfaces (systemd's C{ListenStream=8080})
        also serves C{tcp:8080}, on all interfaces of both families.
        """
        if identity in (self.identity, f"systemd:index={self.index}"):
            return True
        if self.name is not None and identity == f"systemd:name={self.name}":
            return True
        scheme, _, rest = self.identity.partition(":")
        return scheme == "tcp6" and rest.endswith(":interface=::") and identity == (
            f"tcp:{rest.split(':', 1)[0]}:interface=0.0.0.0"
        )


def _passedDescriptors() -> Iterator[int]:
    if "LISTEN_FDS" in os.environ:
        # Twisted's endpoint parsers are not loaded yet (they would have
        # consumed the variables): read them with Twisted's public reader,
        # which checks LISTEN_PID, without paying for the endpoint module.
        from twisted.python.systemd import ListenFDs

        yield from ListenFDs.fromEnvironment().inheritedDescriptors()
        return
    if "twisted.internet.endpoints" not in sys.modules:
        return
    # The parsers consumed the variables: ask them.  The parser makes an
    # AdoptedStreamServerEndpoint whose public fileno is the passed
    # descriptor; it is not listened on, which would close the descriptor.
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    for index in range(MAX_SOCKETS):
        try:
            endpoint = serverFromString(MemoryReactor(), f"systemd:domain=INET:index={index}")
        except Exception:
            return
        yield endpoint.fileno


def systemdSockets(
    environ: Mapping[str, str] = os.environ,
    descriptors: Callable[[], Iterator[int]] = _passedDescriptors,
    identify: Callable[[int], str | None] = socketIdentity,
    familyOf: Callable[[int], socket.AddressFamily | None] = listeningFamily,
) -> list[SystemdSocket]:
    """
    The listening sockets systemd passed to this process.  Descriptors that
    are not listening sockets are left out.
    """
    filenos = list(descriptors())
    names: list[str | None] = list(environ.get("LISTEN_FDNAMES", "").split(":"))
    if len(names) != len(filenos):
        names = [None] * len(filenos)
    result = []
    for index, (fileno, name) in enumerate(zip(filenos, names)):
        identity = identify(fileno)
        family = familyOf(fileno) if identity is not None else None
        if identity is None or family is None:
            continue
        result.append(SystemdSocket(index, name or None, fileno, family, identity))
    return result
