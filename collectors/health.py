"""Health checks per dependency: `/_health` says live, ready, and why not."""

from __future__ import annotations

from typing import Callable

Check = Callable[[], tuple[bool, str]]


class Health:
    def __init__(self):
        self._checks: dict[str, Check] = {}

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def report(self) -> dict:
        checks = {}
        for name, check in sorted(self._checks.items()):
            try:
                ok, detail = check()
            except Exception as exc:  # noqa: BLE001 - a failing check is a finding, not a crash
                ok, detail = False, type(exc).__name__
            checks[name] = {"ok": bool(ok), "detail": detail}
        ready = all(c["ok"] for c in checks.values())
        return {"status": "ok" if ready else "degraded", "live": True, "ready": ready, "checks": checks}
