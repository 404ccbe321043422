"""`vigia up/status/down` run the embedded stack as local processes, and `vigia prove --quick`
proves the definition of done against it (the shortened proof CI runs on every change)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import catalog_on_free_ports

ROOT = Path(__file__).resolve().parent.parent


def vigia(*args, timeout=900):
    return subprocess.run([sys.executable, "-c", "from vigia.cli import run; run()", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    cat = catalog_on_free_ports(ROOT / "stack.yaml", tmp / "stack.yaml")
    args = ("--data", str(tmp / "data"), "--catalog", str(cat))
    started = vigia("up", *args, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    yield tmp, args
    vigia("down", *args)


def test_a_second_up_starts_no_duplicates_and_status_is_healthy(running):
    _, args = running
    again = vigia("up", *args, timeout=180)
    assert again.returncode == 0
    assert again.stdout.count("already running") == 8
    status = vigia("status", *args)
    assert status.returncode == 0 and status.stdout.count(" ok ") >= 8


def test_the_quick_proof_passes_all_seven_checks(running):
    tmp, args = running
    proved = vigia("prove", *args, "--quick", "--report", str(tmp / "report"), timeout=900)
    assert (tmp / "report" / "report.json").exists(), proved.stdout + proved.stderr
    report = json.loads((tmp / "report" / "report.json").read_text())
    failed = [c for c in report["checks"] if not c["passed"]]
    assert not failed, json.dumps(failed, indent=1)
    assert proved.returncode == 0
    for png in ("latency.png", "errors.png", "backpressure.png", "alerts.png"):
        assert (tmp / "report" / png).stat().st_size > 5000


def test_a_port_in_use_gives_one_clear_line(tmp_path):
    cat = catalog_on_free_ports(ROOT / "stack.yaml", tmp_path / "stack.yaml")
    text = cat.read_text()
    port = int(text.split("prometheus_port: ")[1].split("\n")[0])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = vigia("up", "--data", str(tmp_path / "data"), "--catalog", str(cat), timeout=120)
    assert result.returncode != 0
    assert f"port {port} for prometheus is in use" in result.stderr
    vigia("down", "--data", str(tmp_path / "data"), "--catalog", str(cat))


def test_down_stops_exactly_what_up_started(tmp_path):
    cat = catalog_on_free_ports(ROOT / "stack.yaml", tmp_path / "stack.yaml")
    args = ("--data", str(tmp_path / "data"), "--catalog", str(cat))
    assert vigia("up", *args, timeout=180).returncode == 0
    pids = [int(p.read_text()) for p in (tmp_path / "data" / "run").glob("*.pid")]
    assert len(pids) == 8
    stopped = vigia("down", *args)
    assert "stopped 8 parts" in stopped.stdout
    assert not any(Path(f"/proc/{pid}").exists() and b"State:\tZ" not in Path(f"/proc/{pid}/status").read_bytes()
                   for pid in pids)
    assert vigia("status", *args).returncode == 1
