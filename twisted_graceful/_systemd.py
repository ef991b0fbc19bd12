# -*- test-case-name: tests.test_systemd -*-
"""
Sockets passed by systemd socket activation (C{LISTEN_FDS}, C{LISTEN_PID},
C{LISTEN_FDNAMES}).

Importing C{twisted.internet.endpoints} reads systemd's variables and
removes C{LISTEN_FDS} and C{LISTEN_PID} from the environment, so the sockets
are found through Twisted's own public C{systemd:} endpoint parser, not the
variables.  Each socket is described by the address it is bound to, so that
C{--port 8080} uses a socket systemd bound to port 8080.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, Iterator, Mapping

from attrs import frozen
from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

from ._inherit import listeningFamily

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


def socketIdentity(fileno: int) -> str | None:
    """
    The identity of the listening socket C{fileno}, or L{None}.
    """
    family = listeningFamily(fileno)
    if family is None:
        return None
    probe = socket.socket(fileno=os.dup(fileno))
    try:
        address = probe.getsockname()
    finally:
        probe.close()
    if family == socket.AF_INET:
        return f"tcp:{address[1]}:interface={address[0]}"
    if family == socket.AF_INET6:
        return f"tcp6:{address[1]}:interface={address[0]}"
    if family == socket.AF_UNIX and isinstance(address, str) and address:
        return f"unix:{os.path.abspath(address)}"
    return None


def _passedDescriptors() -> Iterator[int]:
    # The parser makes an AdoptedStreamServerEndpoint, whose public fileno
    # is the passed descriptor.  It is not listened on: that would close the
    # descriptor.
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
        family = listeningFamily(fileno) if identity is not None else None
        if identity is None or family is None:
            continue
        result.append(SystemdSocket(index, name or None, fileno, family, identity))
    return result
