"""Runtime flags (seed 004 §5.2 safe-ops): changed through `/_flags` without a restart.

Environment variables read at start: VIGIA_SAMPLING_SUCCESS, VIGIA_SPIKE, VIGIA_LOG_LEVEL,
VIGIA_CHAOS, VIGIA_QUOTA_OVERRIDE, VIGIA_INJECT_5XX, VIGIA_INJECT_LATENCY, VIGIA_JWKS_FAIL.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass
class Flags:
    sampling_success: float | None = None  # overrides the catalog's success rate when set
    spike: bool = False                     # raise success sampling to the catalog's spike rate
    log_level: str = "info"                 # debug keeps every success record; warning/error keep errors only
    chaos: bool = False                     # delay 1 % of requests by 120-300 ms
    quota_override: float | None = None     # tokens/s refill for policy's buckets, to induce backpressure
    inject_5xx: float = 0.0                 # ratio of requests answered INTERNAL 500
    inject_latency: float = 0.0             # ratio of requests delayed 400-600 ms (past the 300 ms SLO)
    jwks_fail: bool = False                 # make JWKS refreshes fail

    def update(self, **changes: object) -> None:
        """Validate every change first, then apply all: a bad request changes nothing."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown flag(s): {', '.join(unknown)}")
        checked = {name: _check(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Flags":
        env = os.environ if env is None else env
        flags = cls()
        raw = {f.name: env[f"VIGIA_{f.name.upper()}"] for f in fields(cls) if f"VIGIA_{f.name.upper()}" in env}
        flags.update(**{k: _parse(k, v) for k, v in raw.items()})
        return flags


def _parse(name: str, text: str) -> object:
    if name in ("spike", "chaos", "jwks_fail"):
        return text.lower() in ("1", "true", "yes", "on")
    if name == "log_level":
        return text
    return None if text == "" else float(text)


def _check(name: str, value: object) -> object:
    if name in ("spike", "chaos", "jwks_fail"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name == "log_level":
        if value not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        return value
    if value is None and name in ("sampling_success", "quota_override"):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    value = float(value)
    if name in ("sampling_success", "inject_5xx", "inject_latency") and not 0 <= value <= 1:
        raise ValueError(f"{name} must be between 0 and 1")
    if name == "quota_override" and value <= 0:
        raise ValueError("quota_override must be > 0 tokens/s")
    return value
