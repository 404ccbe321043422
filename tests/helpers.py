"""Small helpers shared by tests: free ports, waiting for HTTP, a catalog with other ports."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, process=None) -> None:
    """Wait until `url` answers; fail at once if `process` (a Popen) has exited."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process behind {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def with_local_ports(catalog, **ports):
    """The catalog with the local profile's ports replaced (e.g. webhook_sink_port=...)."""
    local = catalog.profiles["local"].model_copy(update=ports)
    return catalog.model_copy(update={"profiles": {**catalog.profiles, "local": local}})


def catalog_on_free_ports(source: Path, target: Path) -> Path:
    """A copy of the catalog whose services and local-profile daemons listen on free ports."""
    import re

    text = source.read_text()
    for port in ("8081", "8082", "8083", "8084"):
        text = text.replace(f"port: {port}\n", f"port: {free_port()}\n", 1)
    local = text.index("  local:\n")
    head, tail = text[:local], text[local:]
    for key in ("prometheus_port", "alertmanager_port", "webhook_sink_port"):
        tail = re.sub(rf"{key}: \d+", f"{key}: {free_port()}", tail, count=1)
    target.write_text(head + tail)
    return target
