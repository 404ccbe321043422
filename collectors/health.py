"""Health checks per dependency: `/_health` says live, ready, and why not.

Two kinds of check, and `report()` never waits on either:
- `add_check(name, check)`: `check() -> (ok, detail)`, called at report time, so it must be cheap
  and do no I/O (a counter, a timestamp, the size of a table in memory).
- `add_async_check(name, check)`: `async def check() -> (ok, detail)` for anything that needs I/O
  (a peer, a database). A background task runs every async check every `interval_s`, each bounded
  by `timeout_s`; `report()` reads the last answer ("not checked yet" until the first). A hung
  dependency therefore never stalls the probe or the event loop: it shows up as a failed check.

The task is started by `instrument()`'s startup hook (`start()`) and cancelled on shutdown (`stop()`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

Check = Callable[[], tuple[bool, str]]
AsyncCheck = Callable[[], Awaitable[tuple[bool, str]]]

CHECK_EVERY_S = 2.0
CHECK_TIMEOUT_S = 1.0
NOT_CHECKED = (False, "not checked yet")


class Health:
    def __init__(self, interval_s: float = CHECK_EVERY_S, timeout_s: float = CHECK_TIMEOUT_S):
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._checks: dict[str, Check] = {}
        self._async_checks: dict[str, AsyncCheck] = {}
        self._last: dict[str, tuple[bool, str]] = {}
        self._task: asyncio.Task | None = None

    def add_check(self, name: str, check: Check) -> None:
        """A cheap, synchronous check (no I/O), called each time the report is made."""
        self._async_checks.pop(name, None)
        self._checks[name] = check

    def add_async_check(self, name: str, check: AsyncCheck) -> None:
        """A check that needs I/O, run in the background; the report shows its last answer."""
        self._checks.pop(name, None)
        self._async_checks[name] = check

    def report(self) -> dict:
        checks = {}
        for name, check in self._checks.items():
            try:
                ok, detail = check()
            except Exception as exc:  # noqa: BLE001 - a failing check is a finding, not a crash
                ok, detail = False, type(exc).__name__
            checks[name] = {"ok": bool(ok), "detail": detail}
        for name in self._async_checks:
            ok, detail = self._last.get(name, NOT_CHECKED)
            checks[name] = {"ok": bool(ok), "detail": detail}
        checks = dict(sorted(checks.items()))
        ready = all(c["ok"] for c in checks.values())
        return {"status": "ok" if ready else "degraded", "live": True, "ready": ready, "checks": checks}

    async def run_checks(self) -> None:
        """One round: every async check at once, each bounded by timeout_s; each answer is kept as
        soon as it comes (a slow check does not hold back the others')."""
        await asyncio.gather(*(self._check(name, check) for name, check in list(self._async_checks.items())))

    async def _check(self, name: str, check: AsyncCheck) -> None:
        try:
            ok, detail = await asyncio.wait_for(check(), self.timeout_s)
            answer = (bool(ok), str(detail))
        except TimeoutError:
            answer = (False, f"no answer within {self.timeout_s:g}s")
        except Exception as exc:  # noqa: BLE001 - a failing check is a finding, not a dead task
            answer = (False, type(exc).__name__)
        if self._async_checks.get(name) is check:  # not replaced meanwhile
            self._last[name] = answer

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.run_checks()
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def start(self) -> None:
        """Start the background task on the running loop (once)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vigia-health-checks")

    async def stop(self) -> None:
        """Cancel the background task and wait for it to end; safe to call more than once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
