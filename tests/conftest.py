"""
Every test runs in its own temporary directory, as trial runs its tests, so
that relative paths (trial's C{mktemp()}, files a test forgets) never land in
the checkout.
"""

from __future__ import annotations

import atexit
import signal
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps its example database and caches in ./.hypothesis by
# default: keep them out of the checkout, and forget them after the run.
_hypothesisHome = tempfile.mkdtemp(prefix="hypothesis-")
atexit.register(shutil.rmtree, _hypothesisHome, ignore_errors=True)
set_hypothesis_home_dir(_hypothesisHome)
settings.register_profile("checkout-clean", database=None)
settings.load_profile("checkout-clean")


@pytest.fixture(autouse=True)
def _inTemporaryDirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


_SERVER_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def _signalsRestored() -> Iterator[None]:
    """
    A service built by a test ignores SIGHUP, SIGUSR1 and SIGUSR2 until its
    handlers are installed: give the test process back its own, so that the
    processes later tests start do not inherit them ignored.
    """
    saved = {s: signal.getsignal(s) for s in _SERVER_SIGNALS}
    yield
    for signum, handler in saved.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
