"""Shared fixtures: the real catalog, loaded once; a chDB client in the test's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.loading import client_at
from vigia import catalog as catalog_mod

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def catalog():
    return catalog_mod.load(ROOT / "stack.yaml")


@pytest.fixture(scope="session")
def catalog_text() -> str:
    return (ROOT / "stack.yaml").read_text()


@pytest.fixture
def ch(tmp_path):
    return client_at(tmp_path / "ch")
