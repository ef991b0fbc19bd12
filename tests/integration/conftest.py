from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

if sys.platform == "win32":  # pragma: no cover
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    """
    A restartable server from C{restartable.tac} in C{tmp_path}; every pid
    it had is ended at teardown.
    """
    from .test_restart_process import Cluster

    c = Cluster(tmp_path)
    c.setMode("ok")
    yield c
    c.kill()
