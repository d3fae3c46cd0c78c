"""Fixtures shared by the evaluator-pool tests (test_pool, test_pool_entries)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_pool import POLICY


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path
