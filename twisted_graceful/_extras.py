# -*- test-case-name: tests.test_extras -*-
"""
The optional features and the extra that installs each, so that a missing
package is reported as the command that installs it:
C{pip install 'twisted-graceful[tls]'}.
"""

from __future__ import annotations

from ._errors import MissingExtra

#: What each extra of C{pyproject.toml} serves.
FEATURES = {
    "tls": "TLS (ssl: ports)",
    "http2": "HTTP/2",
    "websocket": "WebSockets (twisted.web.websocket)",
    "metrics": "Prometheus metrics (prometheus_client)",
}

#: The top-level module of each package an extra brings, and that extra.
MODULES = {
    "OpenSSL": "tls",
    "service_identity": "tls",
    "h2": "http2",
    "priority": "http2",
    "hpack": "http2",
    "hyperframe": "http2",
    "wsproto": "websocket",
    "h11": "websocket",
    "prometheus_client": "metrics",
}


def installCommand(extra: str) -> str:
    """
    The command that installs C{extra}.
    """
    return f"pip install 'twisted-graceful[{extra}]'"


def extraFor(error: BaseException) -> str | None:
    """
    The extra that installs the module whose absence raised C{error}, or
    L{None} if C{error} is not the absence of such a module.
    """
    if not isinstance(error, ImportError) or error.name is None:
        return None
    return MODULES.get(error.name.split(".", 1)[0])


def missingExtra(what: str, error: BaseException) -> MissingExtra | None:
    """
    A L{MissingExtra} saying that C{what} needs the extra whose module is
    missing, or L{None} if C{error} is not the absence of such a module.

    @param what: What could not be done, such as C{"--port 'ssl:8443'"}.
    """
    extra = extraFor(error)
    if extra is None:
        return None
    assert isinstance(error, ImportError)
    return MissingExtra(
        f"{what} needs {FEATURES[extra]}, which is not installed (no module named "
        f"{error.name!r}): {installCommand(extra)}",
        extra=extra,
    )
