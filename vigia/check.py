"""`vigia check`: prove a rendered tree works in the real tools.

Runs promtool (config, rules, rule unit tests), amtool (config, routing tests) and
docker-compose (config) against a folder written by `vigia render`. Each failure is one line.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from vigia import conventions as names

INSTALL_HINT = {
    "promtool": "run `make setup` (installs the Debian package prometheus)",
    "amtool": "run `make setup` (installs the Debian package prometheus-alertmanager)",
}


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.name}" + (f": {self.detail}" if self.detail else "")


def run_checks(out_dir: str | Path) -> list[Outcome]:
    out = Path(out_dir)
    configs = sorted(out.glob(names.PROMETHEUS_CONFIGS_GLOB))
    if not configs:
        return [Outcome("rendered tree", False, f"no {names.PROMETHEUS_CONFIGS_GLOB} in {out}; run `vigia render --out {out}` first")]
    outcomes = config_checks(configs)
    outcomes += [
        _tool("promtool check rules", ["promtool", "check", "rules", *(str(out / path) for path in names.RULE_FILES)]),
        _tool("promtool test rules", ["promtool", "test", "rules",
                                      *sorted(str(p) for p in (out / names.RULE_TESTS).parent.glob("*_test.yml"))]),
        _tool("amtool check-config", ["amtool", "check-config", str(out / names.ALERTMANAGER_CONFIG)]),
    ]
    outcomes += route_tests(out)
    compose = out / names.COMPOSE_FILE
    if compose.exists() and shutil.which("docker-compose"):
        env = out / ".env.example"
        cmd = ["docker-compose", "-f", str(compose)]
        if env.exists():
            cmd += ["--env-file", str(env)]
        outcomes.append(_tool("docker-compose config", cmd + ["config", "-q"]))
    return outcomes


def config_checks(configs: list[Path]) -> list[Outcome]:
    """`promtool check config` on each Prometheus config (one, or one per shard)."""
    return [_tool(f"promtool check config {config.name}", ["promtool", "check", "config", str(config)])
            for config in configs]


def route_tests(out: Path) -> list[Outcome]:
    """Each case of the rendered routing tests through `amtool config routes test`."""
    cases = yaml.safe_load((out / names.ALERTMANAGER_ROUTE_TESTS).read_text())
    results = []
    for case in cases:
        labels = [f"{k}={v}" for k, v in case["labels"].items()]
        expected = ",".join(case["receivers"])
        results.append(_tool(
            f"amtool routes test {case['name']}",
            ["amtool", "config", "routes", "test", f"--config.file={out / names.ALERTMANAGER_CONFIG}",
             f"--verify.receivers={expected}", *labels]))
    return results


def _tool(name: str, cmd: list[str]) -> Outcome:
    if shutil.which(cmd[0]) is None:
        return Outcome(name, False, f"{cmd[0]} not found on PATH; {INSTALL_HINT.get(cmd[0], 'install it')}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return Outcome(name, True)
    text = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    detail = " | ".join(line.strip() for line in text if line.strip())[:2000]
    return Outcome(name, False, detail or f"exit {proc.returncode}")
