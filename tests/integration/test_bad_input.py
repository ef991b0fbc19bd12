"""
Bad input on the command line gives one clear message and a non-zero exit,
with no traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from ._server import ROOT, TWISTD

DEADLINE = 30


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [TWISTD, "-n", "--pidfile=", "graceful", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--app", "no_such_module_tg.root"], "--app 'no_such_module_tg.root': no module named 'no_such_module_tg'"),
        (["--app", "tests.integration.app.missing"], "has no attribute 'missing'"),
        (["--app", "tests.integration.app.hookFirst"], "returned None, which is not a twisted.web IResource"),
        (["--app", "tests.broken_app.root"], "importing 'tests.broken_app' failed with ZeroDivisionError"),
        (["--app", "tests.test_tap.raisingApp"],
         "--app 'tests.test_tap.raisingApp': calling it raised RuntimeError: settings.toml not found"),
        (["--app", "tests.integration.app.root", "--wsgi", "tests.test_tap.wsgiApp"], "--app and --wsgi cannot be used together"),
        (["--port", "tcp:port=notanumber"], "--port: Invalid endpoint description 'tcp:port=notanumber'"),
        (["--port", "nosuch:80"], "Unknown endpoint type: 'nosuch'"),
        (["--shutdown-timeout", "soon"], "--shutdown-timeout takes a number of seconds"),
    ],
)
def test_badOption(tmp_path: Path, args: list[str], message: str) -> None:
    result = run(tmp_path, *args)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output
    assert "Traceback" not in output


def test_appRaisesOneLine(tmp_path: Path) -> None:
    """
    An C{--app} callable that raises ends the command with exactly one line,
    exit status 1; with C{--logfile}, the traceback is in the log at debug
    level.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for logArgs in [[], ["--logfile=app.log"]]:
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", *logArgs, "graceful", "--app", "tests.test_tap.raisingApp"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE,
        )
        assert result.returncode == 1
        assert (result.stdout + result.stderr).splitlines() == [
            "twistd graceful: --app 'tests.test_tap.raisingApp': calling it raised RuntimeError: settings.toml "
            f"not found ({ROOT / 'tests' / 'test_tap.py'}, line {_raiseLine()}). Fix the application, then start again."
        ]
    log = (tmp_path / "app.log").read_text()
    assert "[twisted_graceful.tap#debug] --app 'tests.test_tap.raisingApp': calling it raised RuntimeError" in log
    assert "Traceback (most recent call last):" in log
    assert 'raise RuntimeError("settings.toml not found")' in log


def _raiseLine() -> int:
    from .. import test_tap

    lines = Path(test_tap.__file__).read_text().splitlines()
    return lines.index('    raise RuntimeError("settings.toml not found")') + 1


def test_portInUse(tmp_path: Path) -> None:
    """
    A port already in use is reported on one line, before daemonizing.
    """
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        result = run(tmp_path, "--port", f"tcp:{port}:interface=127.0.0.1")
    finally:
        holder.close()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"twistd graceful: Cannot listen on tcp:{port}:interface=127.0.0.1 "
        f"(127.0.0.1 port {port}): address already in use. Stop the other server, or choose another port."
    )
    assert "Traceback" not in result.stderr + result.stdout
