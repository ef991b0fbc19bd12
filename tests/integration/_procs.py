"""
Looking at processes through /proc, and waiting for them to go.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Iterable

from twisted.internet import reactor
from twisted.internet.task import deferLater

POLL = 0.01


def alive(pid: int) -> bool:
    """
    C{pid} runs (a zombie has finished: its parent just has not reaped it).
    """
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


async def waitUntilGone(pid: int, timeout: float = 20.0) -> None:
    """
    Wait for C{pid} to finish, or fail naming it.
    """
    deadline = reactor.seconds() + timeout  # type: ignore[attr-defined]
    while alive(pid):
        if reactor.seconds() > deadline:  # type: ignore[attr-defined]
            raise AssertionError(f"pid {pid} is still running after {timeout} s")
        await deferLater(reactor, POLL, lambda: None)


def zombieChildren(pid: int) -> list[int]:
    """
    Children of C{pid} that have exited and were not reaped.
    """
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            zombies.append(int(entry.name))
    return zombies


def listeningSockets(pid: int) -> int:
    """
    How many listening TCP sockets process C{pid} holds.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening.add(fields[9])
    return len(inodes & listening)


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def killAll(pids: Iterable[int]) -> None:
    """
    SIGKILL every pid in C{pids} (processes the test started, or their
    successors) that still runs.
    """
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
