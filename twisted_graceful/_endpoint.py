# -*- test-case-name: tests.test_endpoint -*-
"""
Listening addresses: parse a C{--port} value with Twisted's own endpoint
parser, bind the socket ourselves, and adopt it into the reactor.

The library binds every listening socket itself and hands it to
C{reactor.adoptStreamPort}, even on the first start: ports made by
C{listenTCP} call C{shutdown(2)} when they stop listening, which would refuse
connections on the copy a successor inherited.  Each socket is known by its
I{identity}, a normalised description of the address it is bound to, so a
successor finds the socket for each of its endpoints whatever their order.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import warnings
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorSocket
from twisted.internet.protocol import Factory

from ._errors import BadEndpoint, ListenFailed
from ._extras import missingExtra

_SUPPORTED = "tcp:PORT, tcp6:PORT, unix:PATH, ssl:PORT:privateKey=KEY:certKey=CERT, or a bare port number"


@frozen
class ListenAddress:
    """
    Where one endpoint listens.

    @ivar description: The description as the user wrote it.
    @ivar identity: The normalised address, the key of the socket when it is
        handed to a successor: C{tcp:8080:interface=127.0.0.1},
        C{tcp6:8080:interface=::1}, C{unix:/run/app.sock},
        C{systemd:name=web}.  An C{ssl:}
        endpoint has the identity of the TCP socket under it, so its
        certificate can change across a restart.
    @ivar family: The socket's address family.
    @ivar address: C{(host, port)} for TCP, a path for UNIX.
    @ivar backlog: The listen queue length.
    @ivar tlsContextFactory: The TLS context factory of an C{ssl:} endpoint.
    @ivar unixMode: The file mode of a UNIX socket.
    """

    description: str
    identity: str
    family: socket.AddressFamily
    address: tuple[str, int] | str
    backlog: int
    tlsContextFactory: Any = None
    unixMode: int | None = None

    @property
    def scheme(self) -> str:
        """
        C{ssl}, C{tcp}, C{tcp6} or C{unix}.
        """
        if self.tlsContextFactory is not None:
            return "ssl"
        return self.identity.split(":", 1)[0]


def parseEndpoint(description: str) -> ListenAddress:
    """
    Parse a C{--port} value.

    A bare number is TCP on all IPv4 interfaces; anything else is a Twisted
    server endpoint description of type C{tcp}, C{tcp6}, C{unix} or C{ssl},
    parsed by Twisted's own parser so every parameter means what it means to
    C{twistd web}.

    @raise BadEndpoint: The description does not parse, or names another
        kind of endpoint.
    @raise MissingExtra: An C{ssl:} description, without the C{tls} extra.
    """
    text = description.strip()
    if text.isdigit():
        text = f"tcp:{text}"
    if text.startswith("systemd:"):
        return _parseSystemd(description, text)
    fast = _parseCommon(description, text)
    if fast is not None:
        return fast
    return _parseWithTwisted(description, text)


def _parseWithTwisted(description: str, text: str) -> ListenAddress:
    """
    Parse C{text} with Twisted's own endpoint parser (imported only now: it
    brings the TLS stack, which costs start-up time), which also gives every
    error message.

    @raise BadEndpoint: The description does not parse, or names another
        kind of endpoint.
    @raise MissingExtra: The endpoint needs an optional package.
    """
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.testing import MemoryReactor

    recorder = MemoryReactor()
    try:
        endpoint = serverFromString(recorder, text)
    except Exception as e:
        missing = missingExtra(f"{description!r}", e)
        if missing is not None:
            raise missing from None
        raise BadEndpoint(
            f"Invalid endpoint description {description!r}: {_describe(e)}. "
            f"Expected {_SUPPORTED}."
        ) from None
    try:
        endpoint.listen(Factory())
    except Exception:
        pass  # Not a kind of endpoint the recorder understands: refused below.
    if recorder.sslServers:
        port, _, contextFactory, backlog, interface = recorder.sslServers[0]
        contextFactory = _withALPN(contextFactory)
        family, host = _inetFamily(interface)
        return ListenAddress(
            description, _inetIdentity(family, host, port), family, (host, port), backlog, contextFactory
        )
    if recorder.tcpServers:
        port, _, backlog, interface = recorder.tcpServers[0]
        family, host = _inetFamily(interface)
        return ListenAddress(description, _inetIdentity(family, host, port), family, (host, port), backlog)
    if recorder.unixServers:
        path, _, backlog, mode, _ = recorder.unixServers[0]
        path = os.path.abspath(os.fsdecode(path))
        return ListenAddress(description, f"unix:{path}", socket.AF_UNIX, path, backlog, unixMode=mode)
    raise BadEndpoint(
        f"Cannot serve {description!r}: only sockets the library can bind and hand to a "
        f"successor are supported. Expected {_SUPPORTED}."
    )


def _splitDescription(text: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint description into positional and keyword arguments
    exactly as Twisted's C{endpoints._parse} does: C{:} separates, the first
    C{=} of a part makes it a keyword, a backslash escapes the next
    character.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    part: list[str] = []
    current = ""
    ops = ":="
    characters = iter(text)
    for character in characters:
        if character in ops:
            part.append(current)
            current = ""
            if character == ":":
                if len(part) == 1:
                    args.append(part[0])
                else:
                    kwargs[part[0]] = part[1]
                part = []
                ops = ":="
            else:
                ops = ":"
        elif character == "\\":
            current += next(characters)
        else:
            current += character
    part.append(current)
    if len(part) == 1:
        args.append(part[0])
    else:
        kwargs[part[0]] = part[1]
    return args, kwargs


def _bindArguments(names: list[str], defaults: dict[str, str], args: list[str], kwargs: dict[str, str]) -> list[str]:
    """
    Bind arguments to parameter names as a Python call would.

    @raise TypeError: Too many, unknown, repeated or missing arguments.
    """
    if len(args) > len(names) or set(kwargs) - set(names):
        raise TypeError("unexpected arguments")
    bound = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in bound:
            raise TypeError("repeated argument")
        bound[key] = value
    return [bound[name] if name in bound else defaults[name] for name in names]


def _parseCommon(description: str, text: str) -> ListenAddress | None:
    """
    Parse C{tcp:}, C{tcp6:} and C{unix:} descriptions without importing
    Twisted's endpoint parsers, with the same parameters and defaults
    (C{tests/test_endpoint.py} checks both agree).  L{None} for anything
    else, or anything wrong: Twisted's parser then says what.
    """
    try:
        args, kwargs = _splitDescription(text)
        kind, rest = args[0], args[1:]
        if kind == "tcp":
            port, interface, backlog = _bindArguments(
                ["port", "interface", "backlog"], {"interface": "", "backlog": "50"}, rest, kwargs
            )
            family, host = _inetFamily(interface)
            number = int(port)
            return ListenAddress(description, _inetIdentity(family, host, number), family, (host, number), int(backlog))
        if kind == "tcp6":
            port, backlog, interface = _bindArguments(
                ["port", "backlog", "interface"], {"backlog": "50", "interface": "::"}, rest, kwargs
            )
            family, host = _inetFamily(interface)
            number = int(port)
            return ListenAddress(description, _inetIdentity(family, host, number), family, (host, number), int(backlog))
        if kind == "unix":
            address, mode, backlog, lockfile = _bindArguments(
                ["address", "mode", "backlog", "lockfile"], {"mode": "666", "backlog": "50", "lockfile": "1"}, rest, kwargs
            )
            int(lockfile)
            path = os.path.abspath(address)
            return ListenAddress(description, f"unix:{path}", socket.AF_UNIX, path, int(backlog), unixMode=int(mode, 8))
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return None


_FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}


def _parseSystemd(description: str, text: str) -> ListenAddress:
    """
    C{systemd:domain=INET:name=web} (or C{index=0}): a socket passed by
    systemd socket activation, known by its name or index, so that a
    successor (to which systemd passed nothing) finds it among the sockets
    it inherited.
    """
    fields = dict(part.partition("=")[::2] for part in text.split(":")[1:])
    family = _FAMILIES.get(fields.pop("domain", ""))
    name, index = fields.pop("name", None), fields.pop("index", None)
    if family is None or (name is None) == (index is None) or fields or (index is not None and not index.isdigit()):
        raise BadEndpoint(
            f"Invalid endpoint description {description!r}: expected "
            "systemd:domain=INET:name=NAME (or index=N; domain INET, INET6 or UNIX)."
        )
    identity = f"systemd:name={name}" if name is not None else f"systemd:index={int(index)}"  # type: ignore[arg-type]
    return ListenAddress(description, identity, family, identity, 0)


def _withALPN(options: Any) -> Any:
    """
    Name the protocols served in ALPN: C{h2} (when Twisted can serve HTTP/2,
    with C{twisted[http2]}), then C{http/1.1}.

    Twisted's C{ssl:} parser makes options that name none, and the factory
    that serves the connection (a L{DrainingFactory}, not the L{Site}) names
    none either: a client that offers ALPN, as browsers and curl do, would
    then fail the handshake.
    """
    from OpenSSL import SSL
    from twisted.internet.ssl import CertificateOptions
    from twisted.web.http import H2_ENABLED

    if not isinstance(options, CertificateOptions):
        return options
    method: dict[str, Any] = {} if options.method == SSL.TLS_METHOD else {"method": options.method}
    with warnings.catch_warnings():
        # Twisted's parser warned already about an sslmethod= it was given.
        warnings.simplefilter("ignore", DeprecationWarning)
        return CertificateOptions(
            privateKey=options.privateKey,
            certificate=options.certificate,
            extraCertChain=options.extraCertChain or None,
            dhParameters=options.dhParameters,
            acceptableProtocols=[b"h2", b"http/1.1"] if H2_ENABLED else [b"http/1.1"],
            **method,
        )


def _describe(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, (OSError, ImportError)):
        return f"{type(e).__name__}: {text}"
    return text


def _inetFamily(interface: str) -> tuple[socket.AddressFamily, str]:
    if ":" in interface:
        return socket.AF_INET6, interface
    return socket.AF_INET, interface or "0.0.0.0"


def _inetIdentity(family: socket.AddressFamily, host: str, port: int) -> str:
    scheme = "tcp6" if family == socket.AF_INET6 else "tcp"
    return f"{scheme}:{port}:interface={host}"


def bindSocket(address: ListenAddress) -> socket.socket:
    """
    Bind and listen on a new non-blocking socket for C{address}.

    A UNIX socket file left behind by a process that is gone is replaced; one
    that still accepts connections is not.

    @raise ListenFailed: The socket cannot be bound.
    """
    if address.identity.startswith("systemd:"):
        raise ListenFailed(
            f"Cannot listen on {address.description}: systemd passed no socket "
            f"{address.identity.split(':', 1)[1]}. Check the socket unit's FileDescriptorName= "
            "and that the service is started through its socket."
        )
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_UNIX:
            assert isinstance(address.address, str)
            _removeStaleUnixSocket(address)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address.address)
        if address.family == socket.AF_UNIX and address.unixMode is not None:
            os.chmod(address.address, address.unixMode)  # type: ignore[arg-type]
        sock.listen(address.backlog)
        # The reactor would hang inside accept() on a blocking socket.
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ListenFailed(_bindMessage(address, e)) from None
    except ListenFailed:
        sock.close()
        raise
    return sock


def _removeStaleUnixSocket(address: ListenAddress) -> None:
    path = address.address
    assert isinstance(path, str)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenFailed(
            f"Cannot listen on {address.description}: {path} exists and is not a socket. "
            "Remove it or choose another path."
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise ListenFailed(
        f"Cannot listen on {address.description}: another process is accepting "
        f"connections on {path}. Stop it or choose another path."
    )


def _bindMessage(address: ListenAddress, e: OSError) -> str:
    where = address.address if isinstance(address.address, str) else "%s port %d" % address.address
    if e.errno == errno.EADDRINUSE:
        advice = "address already in use. Stop the other server, or choose another port."
    elif e.errno in (errno.EACCES, errno.EPERM):
        advice = (
            "permission denied. Ports below 1024 need root or CAP_NET_BIND_SERVICE; "
            "a UNIX socket needs a writable directory."
        )
    elif e.errno == errno.EADDRNOTAVAIL:
        advice = "no such address on this machine. Check the interface= value."
    else:
        advice = f"{e.strerror or e}."
    return f"Cannot listen on {address.description} ({where}): {advice}"


def adoptSocket(
    reactor: IReactorSocket,
    address: ListenAddress,
    fileno: int,
    factory: IProtocolFactory,
    *,
    applyBacklog: bool = False,
) -> IListeningPort:
    """
    Serve C{factory} on the non-blocking listening socket C{fileno} (which
    stays open and is not closed here: the reactor listens on its own
    duplicate).  An C{ssl:} address wraps the factory in TLS.

    @param applyBacklog: Set the socket's listen queue to the address's
        C{backlog} (for a socket bound by a predecessor with another
        C{backlog=}); a socket bound here has it already.
    """
    if address.tlsContextFactory is not None:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        factory = TLSMemoryBIOFactory(address.tlsContextFactory, False, factory)
    port = reactor.adoptStreamPort(fileno, address.family, factory)  # type: ignore[arg-type]
    sock = getattr(port, "socket", None)
    if applyBacklog and address.backlog > 0 and sock is not None:
        # listen() on a listening socket only sets its queue length; the
        # predecessor, which shares the socket, goes on accepting.
        sock.listen(address.backlog)
    return port


def boundAddress(port: IListeningPort) -> str:
    """
    A human and machine readable form of where C{port} listens:
    C{127.0.0.1:8080}, C{[::1]:8080} or a path.
    """
    host: Any = port.getHost()
    if hasattr(host, "port"):
        if ":" in host.host:
            return f"[{host.host}]:{host.port}"
        return f"{host.host}:{host.port}"
    name = getattr(host, "name", b"")
    return os.fsdecode(name) if name else str(host)
