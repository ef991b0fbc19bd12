# -*- test-case-name: tests.test_assign -*-
"""
L{assignSockets}: which endpoint takes which inherited socket.  Pure: it
decides, the service adopts and closes.
"""

from __future__ import annotations

import socket
from typing import Iterable, Mapping, Sequence

from attrs import field, frozen

from ._systemd import SystemdSocket


@frozen
class Wanted:
    """
    An endpoint without a socket yet.

    @ivar identity: Its identity (L{ListenAddress.identity}).
    @ivar family: Its address family.
    """

    identity: str
    family: socket.AddressFamily


@frozen
class Assignment:
    """
    What to do with every inherited descriptor.

    @ivar fromParent: Identity to a descriptor from the predecessor.
    @ivar fromSystemd: Identity to the L{SystemdSocket} systemd passed.
    @ivar unused: Descriptors no endpoint takes: to be closed once the
        process serves.
    @ivar ignoredSystemd: The systemd sockets among C{unused}, for the log.
    """

    fromParent: dict[str, int] = field(factory=dict)
    fromSystemd: dict[str, SystemdSocket] = field(factory=dict)
    unused: list[int] = field(factory=list)
    ignoredSystemd: list[SystemdSocket] = field(factory=list)


def assignSockets(
    wanted: Sequence[Wanted],
    inherited: Mapping[str, tuple[int, socket.AddressFamily]],
    refused: Iterable[int] = (),
    systemd: Iterable[SystemdSocket] = (),
) -> Assignment:
    """
    Give each wanted endpoint the predecessor's socket of its identity and
    family, else the first systemd socket that matches it (by address,
    name or index); every other descriptor is unused.

    @param wanted: The endpoints without a socket, in the order they were
        added (which decides between systemd sockets that match twice).
    @param inherited: The predecessor's sockets by identity.
    @param refused: Inherited descriptors already refused.
    """
    result = Assignment(unused=list(refused))
    byIdentity = {w.identity: w for w in wanted}
    for identity, (fileno, family) in inherited.items():
        endpoint = byIdentity.get(identity)
        if endpoint is None or endpoint.family != family:
            result.unused.append(fileno)
        else:
            result.fromParent[identity] = fileno
    waiting = [w for w in wanted if w.identity not in result.fromParent]
    for passed in systemd:
        endpoint = next((w for w in waiting if passed.matches(w.identity)), None)
        if endpoint is None:
            result.unused.append(passed.fileno)
            result.ignoredSystemd.append(passed)
            continue
        waiting.remove(endpoint)
        result.fromSystemd[endpoint.identity] = passed
    return result
