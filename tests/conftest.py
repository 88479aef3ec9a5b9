"""Fixtures shared by the operator-process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from support.emulator import Cluster
from support.operator_process import OperatorProcess


@pytest.fixture
async def cluster(kmock: Any) -> Cluster:
    """The emulated API (select it with `pytest.mark.kmock(cls=Cluster)`)."""
    assert isinstance(kmock, Cluster), "mark the test with pytest.mark.kmock(cls=Cluster)"
    return kmock


@pytest.fixture
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    """`modelyard run` against the emulated API, stopped with SIGTERM after the test."""
    process = OperatorProcess(str(cluster.url), tmp_path).start()
    yield process
    await process.stop()
