"""
Graceful shutdown and zero-downtime restart for Twisted HTTP services.
"""

from ._drain import DEFAULT_IDLE_GRACE, DrainingFactory, DrainResult, isDraining, whenDraining
from ._errors import (
    AppLoadError,
    BadEndpoint,
    ChildExitedEarly,
    ChildReadyTimeout,
    GracefulError,
    ListenFailed,
    MissingExtra,
    NotReadyToRestart,
    PidFileError,
    RestartInProgress,
    SuccessorDied,
    UnsupportedSite,
)
from ._hooks import HookOutcome
from ._metrics import GracefulMetrics
from ._attempt import RestartOutcome
from ._service import DEFAULT_SHUTDOWN_TIMEOUT, GracefulService, GracefulSiteService
from ._endpoint import ListenAddress, parseEndpoint
from ._version import __version__ as __version__

__all__ = [
    "DEFAULT_IDLE_GRACE",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "AppLoadError",
    "BadEndpoint",
    "ChildExitedEarly",
    "ChildReadyTimeout",
    "DrainResult",
    "DrainingFactory",
    "GracefulError",
    "GracefulMetrics",
    "GracefulService",
    "GracefulSiteService",
    "HookOutcome",
    "ListenAddress",
    "ListenFailed",
    "MissingExtra",
    "NotReadyToRestart",
    "PidFileError",
    "RestartInProgress",
    "RestartOutcome",
    "SuccessorDied",
    "UnsupportedSite",
    "isDraining",
    "parseEndpoint",
    "whenDraining",
]
