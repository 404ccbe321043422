"""The user's path: `vigia render --profile P --out DIR && vigia check --out DIR` exits 0 for every profile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vigia import conventions as names
from vigia.check import config_checks
from vigia.render import PROFILES, render_all
from vigia.writer import write_tree

ROOT = Path(__file__).resolve().parent.parent


def vigia(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from vigia.cli import run; run()", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("profile", PROFILES, ids=[f"the {p} profile renders and passes every real-tool check" for p in PROFILES])
def test_render_then_check_passes(tmp_path, profile):
    out = tmp_path / profile
    rendered = vigia("render", "--profile", profile, "--out", str(out))
    assert rendered.returncode == 0, rendered.stderr
    checked = vigia("check", "--out", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout + checked.stderr
    tools = ["promtool check rules", "promtool test rules", "amtool check-config"]
    # One Prometheus config per shard; a sharded profile has no single-host compose file.
    if profile == "cluster":
        tools += ["promtool check config prometheus-shard-0.yml", "promtool check config prometheus-shard-1.yml"]
    else:
        tools += ["promtool check config prometheus.yml", "docker-compose config"]
    for tool in tools:
        assert f"ok   {tool}" in checked.stdout


def test_rendering_twice_gives_identical_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert vigia("render", "--profile", "cluster", "--out", str(out)).returncode == 0
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_a_stale_file_from_an_earlier_render_is_removed(tmp_path):
    out = tmp_path / "out"
    assert vigia("render", "--profile", "local", "--out", str(out)).returncode == 0
    manifest = out / ".vigia-rendered"
    manifest.write_text(manifest.read_text() + "prometheus/rules/old.yml\n")
    (out / "prometheus/rules/old.yml").write_text("groups: []\n")
    assert vigia("render", "--profile", "local", "--out", str(out)).returncode == 0
    assert not (out / "prometheus/rules/old.yml").exists()


def test_check_on_a_folder_that_was_never_rendered_says_what_to_do(tmp_path):
    checked = vigia("check", "--out", str(tmp_path / "nothing"))
    assert checked.returncode == 1
    assert "run `vigia render" in checked.stderr


def test_a_tampered_rule_test_expectation_fails_the_check(tmp_path):
    out = tmp_path / "out"
    assert vigia("render", "--profile", "local", "--out", str(out)).returncode == 0
    tests = out / "prometheus/tests/alerts_test.yml"
    tests.write_text(tests.read_text().replace("severity: page", "severity: ticket", 1))
    checked = vigia("check", "--out", str(out))
    assert checked.returncode == 1
    assert "FAIL promtool test rules" in checked.stderr


def test_a_bogus_key_in_any_shard_config_fails_the_check(tmp_path, catalog):
    write_tree(tmp_path, render_all(catalog, "cluster"))
    shard = tmp_path / "prometheus/prometheus-shard-1.yml"
    shard.write_text(shard.read_text().replace("scrape_configs:", "bogus_key: 1\nscrape_configs:", 1))
    outcomes = {o.name: o.ok for o in config_checks(sorted(tmp_path.glob(names.PROMETHEUS_CONFIGS_GLOB)))}
    assert outcomes == {"promtool check config prometheus-shard-0.yml": True,
                        "promtool check config prometheus-shard-1.yml": False}
