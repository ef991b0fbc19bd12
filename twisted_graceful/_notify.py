# -*- test-case-name: tests.test_notify -*-
"""
systemd's notify protocol: datagrams of C{KEY=value} lines to the unix socket
named by C{NOTIFY_SOCKET}.

Under C{Type=notify} with C{NotifyAccess=all}: C{READY=1} once serving;
C{RELOADING=1} when an upgrade starts; C{MAINPID=} the successor, then
C{READY=1}, when it is done; C{STOPPING=1} when a final drain starts;
C{STATUS=} lines for C{systemctl status}.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Mapping

from twisted.logger import Logger

_log = Logger()


class Notifier:
    """
    Sends notifications to systemd, or does nothing when C{NOTIFY_SOCKET} is
    not set.

    @param environ: Where C{NOTIFY_SOCKET} is read.
    """

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> None:
        """
        Send one datagram of C{lines} (C{"READY=1"}, C{"STATUS=..."}).
        """
        if self._address is None:
            return
        message = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as e:
            if not self._warned:
                self._warned = True
                _log.warn("Cannot notify systemd at {address}: {error}", address=self._address, error=str(e))

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self, status: str) -> None:
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", f"STATUS={status}")

    def mainPID(self, pid: int, status: str) -> None:
        self.notify(f"MAINPID={pid}", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")
