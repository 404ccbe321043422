"""The committed prod render equals a fresh render.

`infra/observability/` and the root `docker-compose.yml` are generated files under version control
(kube-prometheus' `generate && git diff --exit-code`). When the catalog or a renderer changes on
purpose, refresh them with `make render-golden` or `VIGIA_UPDATE_GOLDEN=1 pytest tests/test_golden.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

from vigia.render import render_all, render_root_files
from vigia.writer import MANIFEST, serialize, write_tree

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "infra" / "observability"
UPDATE = os.environ.get("VIGIA_UPDATE_GOLDEN") == "1"


def test_the_committed_prod_render_is_current(catalog):
    files = render_all(catalog, "prod")
    if UPDATE:
        write_tree(GOLDEN, files)
    committed = {str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*") if p.is_file() and p.name != MANIFEST}
    assert committed == set(files), "rendered file set changed: run `make render-golden`"
    stale = [rel for rel, data in sorted(files.items()) if (GOLDEN / rel).read_bytes() != serialize(rel, data)]
    assert not stale, f"committed render differs from a fresh one: {stale}; run `make render-golden`"


def test_the_root_files_are_current(catalog):
    for rel, data in sorted(render_root_files(catalog).items()):
        expected = serialize(rel, data)
        if UPDATE:
            (ROOT / rel).write_bytes(expected)
        assert (ROOT / rel).read_bytes() == expected, f"{rel} differs from a fresh render; run `make render-golden`"
