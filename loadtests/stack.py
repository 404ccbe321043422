"""The embedded stack: Prometheus, Alertmanager, the four services, the alert sink and a rollup
loop as local processes, no Docker, no root. Everything lives under one data folder:
`config/` (the rendered local profile), `spool/`, `store/`, `clickhouse/`, `alerts/`, and
`run/` (a pidfile and a log per part, and the admin token).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from vigia.model import Catalog
from vigia.render import render_all
from vigia.writer import write_tree

VIGIA = [sys.executable, "-c", "from vigia.cli import run; run()"]


class StackError(RuntimeError):
    """A part could not be started; the message names the part and what to do."""


@dataclass(frozen=True)
class Part:
    name: str
    cmd: tuple[str, ...]
    port: int
    health: str  # URL path that answers 200 when ready

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def admin_token(data: Path) -> str:
    path = data / "run" / "admin-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


def parts(catalog: Catalog, catalog_path: Path, data: Path, rollup_every: int = 3600) -> list[Part]:
    prof = catalog.profiles["local"]
    cfg = data / "config"
    cat = ("--catalog", str(catalog_path))
    out = [
        Part("prometheus", ("prometheus", f"--config.file={cfg / 'prometheus/prometheus.yml'}",
                            f"--storage.tsdb.path={data / 'prometheus'}", f"--web.listen-address=127.0.0.1:{prof.prometheus_port}",
                            f"--storage.tsdb.retention.time={catalog.retention.metrics_days}d", "--web.enable-lifecycle"),
             prof.prometheus_port, "/-/ready"),
        Part("alertmanager", ("prometheus-alertmanager", f"--config.file={cfg / 'alertmanager/alertmanager.yml'}",
                              f"--storage.path={data / 'alertmanager'}", f"--web.listen-address=127.0.0.1:{prof.alertmanager_port}",
                              "--cluster.listen-address="), prof.alertmanager_port, "/-/ready"),
        Part("alert-sink", (*VIGIA, "sink", "--port", str(prof.webhook_sink_port), "--out", str(data / "alerts")),
             prof.webhook_sink_port, "/_health"),
    ]
    for name in ("policy", "core", "office", "gateway"):
        port = catalog.component(name).port
        extra = ("--jwks-refresh-s", "5") if name == "gateway" else ()
        out.append(Part(name, (*VIGIA, "serve", name, "--port", str(port), "--data-dir", str(data / "spool"), *extra, *cat),
                        port, "/_health"))
    out.append(Part("rollup", (*VIGIA, "rollup", "--spool", str(data / "spool"), "--store", f"file://{data / 'store'}",
                               "--clickhouse", f"chdb://{data / 'clickhouse'}", "--key-file", str(data / "run" / "rollup.key"),
                               "--every", str(rollup_every), *cat), 0, ""))
    return out


def pid_of(data: Path, part: Part) -> int | None:
    """The part's pid if its pidfile names a live process running this part's command."""
    path = data / "run" / f"{part.name}.pid"
    try:
        pid = int(path.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if part.cmd[-1] in cmdline and part.cmd[0].rsplit("/", 1)[-1] in cmdline else None


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _healthy(part: Part) -> bool:
    if not part.health:
        return True
    try:
        return httpx.get(part.url + part.health, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def up(catalog: Catalog, catalog_path: Path, data: Path, timeout: float = 60.0, echo=print, rollup_every: int = 3600,
       fresh: bool = False) -> list[Part]:
    """Start what is not running. `fresh` first stops the stack and empties its data folder."""
    data = data.resolve()
    if fresh and data.exists():
        if any(data.iterdir()) and not (data / "run").is_dir():
            raise StackError(f"{data} is not an embedded stack's data folder; refusing to empty it")
        down(catalog, catalog_path, data, echo=lambda *_: None)
        shutil.rmtree(data)
    write_tree(data / "config", render_all(catalog, "local"), source=catalog_path.name)
    env = dict(os.environ, VIGIA_ADMIN_TOKEN=admin_token(data))
    (data / "run").mkdir(parents=True, exist_ok=True)
    started = []
    all_parts = parts(catalog, catalog_path.resolve(), data, rollup_every)
    for part in all_parts:
        if pid_of(data, part):
            echo(f"{part.name}: already running")
            continue
        if part.cmd[0] in ("prometheus", "prometheus-alertmanager") and shutil.which(part.cmd[0]) is None:
            raise StackError(f"{part.cmd[0]} not found on PATH: run `make setup` (Debian package "
                             f"{'prometheus' if part.cmd[0] == 'prometheus' else 'prometheus-alertmanager'})")
        if part.port and _port_busy(part.port):
            raise StackError(f"port {part.port} for {part.name} is in use by another process; stop it or change the "
                             f"port in stack.yaml (profiles.local or components)")
        log = open(data / "run" / f"{part.name}.log", "ab")
        proc = subprocess.Popen(part.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data, start_new_session=True)
        (data / "run" / f"{part.name}.pid").write_text(str(proc.pid))
        started.append((part, proc))
    deadline = time.monotonic() + timeout
    for part, proc in started:
        while not _healthy(part):
            if proc.poll() is not None:
                raise StackError(f"{part.name} exited with {proc.returncode}; see {data / 'run' / (part.name + '.log')}")
            if time.monotonic() > deadline:
                raise StackError(f"{part.name} not healthy after {timeout:.0f}s; see {data / 'run' / (part.name + '.log')}")
            time.sleep(0.2)
        echo(f"{part.name}: up{f' at {part.url}' if part.port else ''}")
    return all_parts


def down(catalog: Catalog, catalog_path: Path, data: Path, echo=print, only: str | None = None) -> int:
    """Stop every part `up` started (or only the one named), by pidfile, never anything else."""
    data = data.resolve()
    stopped = 0
    for part in reversed(parts(catalog, catalog_path.resolve(), data)):
        if only and part.name != only:
            continue
        pid = pid_of(data, part)
        if pid is None:
            (data / "run" / f"{part.name}.pid").unlink(missing_ok=True)
            continue
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
            except ChildProcessError:
                pass
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists() and b"zombie" not in _state(pid):
            os.killpg(pid, signal.SIGKILL)
        (data / "run" / f"{part.name}.pid").unlink(missing_ok=True)
        echo(f"{part.name}: stopped")
        stopped += 1
    return stopped


def _state(pid: int) -> bytes:
    try:
        status = Path(f"/proc/{pid}/status").read_bytes()
        return b"zombie" if b"State:\tZ" in status else b"running"
    except FileNotFoundError:
        return b"zombie"


def status(catalog: Catalog, catalog_path: Path, data: Path) -> list[dict]:
    data = data.resolve()
    rows = []
    for part in parts(catalog, catalog_path.resolve(), data):
        pid = pid_of(data, part)
        rows.append({"part": part.name, "pid": pid, "url": part.url if part.port else "",
                     "health": ("ok" if _healthy(part) else "not ready") if pid else "stopped"})
    return rows
