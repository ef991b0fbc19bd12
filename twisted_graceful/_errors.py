# -*- test-case-name: tests.test_errors -*-
"""
Exceptions raised by twisted_graceful.

Each failure a user can act on has its own class; every class derives from
L{GracefulError}.
"""

from __future__ import annotations


class GracefulError(Exception):
    """
    Base class of every exception raised by twisted_graceful.
    """


class BadEndpoint(GracefulError, ValueError):
    """
    Raised when an endpoint description cannot be served: the syntax is wrong,
    or it names an endpoint type that cannot be bound by the library and
    handed to a successor.
    """


class AppLoadError(GracefulError):
    """
    Raised when the application named by C{--app} or C{--wsgi} cannot be
    imported, does not exist, or is not of the expected kind.
    """


class MissingExtra(GracefulError, ImportError):
    """
    Raised when a feature needs an optional package that is not installed;
    the message names the extra that installs it
    (C{pip install 'twisted-graceful[tls]'}).

    @ivar extra: The extra: C{tls}, C{http2} or C{websocket}.
    """

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class ListenFailed(GracefulError):
    """
    Raised when a listening socket cannot be bound, for example because the
    address is already in use or the process lacks the permission.
    """


class UnsupportedSite(GracefulError, TypeError):
    """
    Raised when a L{twisted.web.server.Site} customises C{protocol}, which the
    drain needs to own to track connections.
    """


class RestartInProgress(GracefulError):
    """
    Raised (as a Deferred failure) by C{restart()} when a restart is already
    under way; the restart in progress is left unharmed.
    """


class NotReadyToRestart(GracefulError):
    """
    Raised (as a Deferred failure) by C{restart()} when this process cannot
    restart yet: it is not serving, it is stopping, or its own predecessor has
    not exited.
    """


class ChildExitedEarly(GracefulError):
    """
    The successor process exited (or closed its readiness channel) before it
    reported ready.  The old process keeps serving.
    """


class ChildReadyTimeout(GracefulError):
    """
    The successor process did not report ready within the ready timeout; it
    was terminated and the old process keeps serving.
    """


class PidFileError(GracefulError):
    """
    Raised when the pid file names another live process, or cannot be read
    or written.
    """


class SuccessorDied(GracefulError):
    """
    The successor died after it reported ready.  Within its probation, or
    while the old process still drained, the old process rolled back: it
    accepts on its listening sockets again and serves on.

    @ivar pid: The successor's serving pid.
    @ivar exitStatus: How it ended (C{exit status 1}, C{killed by SIGKILL}).
    @ivar served: Seconds from its ready report to its death.

    @since: 0.2
    """

    def __init__(self, message: str, pid: int | None = None, exitStatus: str = "", served: float = 0.0) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitStatus = exitStatus
        self.served = served
