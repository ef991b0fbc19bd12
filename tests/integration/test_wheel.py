"""
The wheel installs into a fresh virtualenv and brings the twistd plugin with
it, without breaking Twisted's own packages.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

from ._server import ROOT

DEADLINE = 240


def test_wheelInFreshVirtualenv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=DEADLINE,
    )
    [wheel] = dist.glob("twisted_graceful-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/twisted_graceful_plugin.py" in names
    assert "twisted_graceful/py.typed" in names
    for forbidden in ["twisted/__init__.py", "twisted/plugins/__init__.py"]:
        assert forbidden not in names
    assert not [n for n in names if n.endswith("dropin.cache") or "__pycache__" in n]

    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=DEADLINE)
    result = subprocess.run(
        [env / "bin" / "twistd", "graceful", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "--shutdown-timeout" in result.stdout
    listed = subprocess.run([env / "bin" / "twistd", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert "graceful" in listed.stdout
    # Twisted's own plugins are still found next to ours.
    assert "web" in listed.stdout
