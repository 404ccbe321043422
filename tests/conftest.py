"""Shared fixtures: the real catalog, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigia import catalog as catalog_mod

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def catalog():
    return catalog_mod.load(ROOT / "stack.yaml")


@pytest.fixture(scope="session")
def catalog_text() -> str:
    return (ROOT / "stack.yaml").read_text()
