"""The typed, immutable catalog model.

`stack.yaml` is parsed once into these classes (pydantic, unknown keys rejected); after that,
nothing reads YAML again. Renderers, the collectors library and the jobs take a `Catalog`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DURATION = re.compile(r"^\d+(ms|s|m|h|d|w)$")
DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(value: str) -> float:
    """'5m' -> 300.0 (Prometheus duration syntax, one unit)."""
    match = re.match(r"^(\d+)(ms|s|m|h|d|w)$", value)
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return int(match.group(1)) * DURATION_SECONDS[match.group(2)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_duration(value: str) -> str:
    if not DURATION.match(value):
        raise ValueError(f"{value!r} is not a Prometheus duration like 5m, 1h, 3d")
    return value


class Route(Frozen):
    path: str
    methods: tuple[str, ...]

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value


class Component(Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    port: int = Field(gt=0, lt=65536)
    routes: tuple[Route, ...]

    @property
    def route_templates(self) -> tuple[str, ...]:
        return tuple(route.path for route in self.routes)


class Metric(Frozen):
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    component: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: dict[str, str] = Field(default_factory=dict)
    buckets: str | None = None
    http: Literal["requests", "duration"] | None = None

    @model_validator(mode="after")
    def _naming(self) -> "Metric":
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError("counter names end in _total (Prometheus naming)")
        if self.type == "histogram" and self.buckets is None:
            raise ValueError("a histogram needs buckets")
        if self.type != "histogram" and self.buckets is not None:
            raise ValueError("only histograms take buckets")
        return self


class Slo(Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    component: str
    description: str
    kind: Literal["availability", "latency"]
    objective: float = Field(gt=0, lt=100)
    metric: str
    errors: dict[str, str] = Field(default_factory=dict)
    threshold_seconds: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Slo":
        if self.kind == "latency" and self.threshold_seconds is None:
            raise ValueError("a latency SLO needs threshold_seconds")
        if self.kind == "availability" and not self.errors:
            raise ValueError("an availability SLO needs errors (label matchers of the bad events)")
        return self

    @property
    def error_budget(self) -> float:
        """Allowed bad-event ratio, e.g. 0.003 for 99.7 %."""
        return round(1 - self.objective / 100, 10)


class BurnRateTier(Frozen):
    severity: Literal["page", "ticket"]
    factor: float = Field(gt=0)
    long: str
    short: str
    for_: str = Field(alias="for")

    _d = field_validator("long", "short", "for_")(_check_duration)


class Condition(Frozen):
    window: str
    above: float = Field(gt=0)

    _d = field_validator("window")(_check_duration)


class Alert(Frozen):
    name: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$")
    kind: Literal["latency_quantile", "error_ratio", "spike", "threshold", "target_down", "absent", "watchdog"]
    severity: Literal["page", "ticket", "none"]
    summary: str
    component: str | None = None
    metric: str | None = None
    for_: str = Field(default="0s", alias="for")
    # latency_quantile
    quantile: float | None = Field(default=None, gt=0, lt=1)
    threshold: float | None = None
    windows: tuple[str, ...] = ()
    # error_ratio
    errors: dict[str, str] = Field(default_factory=dict)
    combine: Literal["and", "or"] = "and"
    conditions: tuple[Condition, ...] = ()
    # spike
    by: tuple[str, ...] = ()
    window: str | None = None
    baseline: str | None = None
    factor: float | None = None
    min_rate: float | None = None
    # threshold
    op: Literal[">", ">=", "<", "<=", "=="] | None = None
    value: float | None = None

    _d = field_validator("for_")(_check_duration)

    @model_validator(mode="after")
    def _shape(self) -> "Alert":
        needs = {
            "latency_quantile": ("metric", "quantile", "threshold", "windows"),
            "error_ratio": ("metric", "errors", "conditions"),
            "spike": ("metric", "by", "window", "baseline", "factor", "min_rate"),
            "threshold": ("metric", "op", "value"),
            "absent": ("metric",),
            "target_down": (),
            "watchdog": (),
        }[self.kind]
        missing = [name for name in needs if getattr(self, name) in (None, (), {})]
        if missing:
            raise ValueError(f"a {self.kind} alert needs {', '.join(missing)}")
        for window in (*self.windows, *(w for w in (self.window, self.baseline) if w)):
            _check_duration(window)
        return self


LogFieldType = Literal["timestamp", "token", "route", "id", "bool", "int"]
TrailFieldType = Literal["token", "route", "id", "int", "bool", "args_min"]


class Sampling(Frozen):
    success: float = Field(ge=0, le=1)
    error: float = Field(ge=0, le=1)
    spike: float = Field(ge=0, le=1)
    routes: dict[str, float] = Field(default_factory=dict)
    tools: dict[str, float] = Field(default_factory=dict)


class Logs(Frozen):
    fields: dict[str, LogFieldType]
    forbidden: tuple[str, ...]
    max_value_length: int = Field(gt=0)
    sampling: Sampling

    @model_validator(mode="after")
    def _disjoint(self) -> "Logs":
        clash = sorted(set(self.fields) & set(self.forbidden))
        if clash:
            raise ValueError(f"fields both allowed and forbidden: {', '.join(clash)}")
        return self


class Trails(Frozen):
    kinds: dict[str, dict[str, TrailFieldType]]


class ErrorToken(Frozen):
    status: int = Field(ge=400, lt=600)
    retry_after: bool = False


class AuditDays(Frozen):
    min: int = Field(gt=0)
    default: int = Field(gt=0)
    max: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "AuditDays":
        if not self.min <= self.default <= self.max:
            raise ValueError("needs min <= default <= max")
        return self


class Retention(Frozen):
    logs_days: int = Field(gt=0)
    metrics_days: int = Field(gt=0)
    audit_days: AuditDays
    gold_days: int = Field(gt=0)


class Privacy(Frozen):
    k_anonymity: int = Field(ge=2)
    epsilon: float = Field(gt=0)


class Storage(Frozen):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    logs_prefix: str
    audit_prefix: str
    clickhouse_database: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")


class Profile(Frozen):
    scrape_interval: str
    evaluation_interval: str
    host: str
    prometheus_port: int
    alertmanager_port: int
    webhook_sink_port: int
    shards: int = Field(default=1, ge=1)
    remote_write_url: str | None = None
    clickhouse_cluster: str | None = None

    _d = field_validator("scrape_interval", "evaluation_interval")(_check_duration)


class Alerting(Frozen):
    smtp_smarthost: str
    smtp_from: str
    smtp_username: str
    page_email_to: str
    group_wait: str
    group_interval: str
    repeat_interval: str
    watchdog_repeat_interval: str

    _d = field_validator("group_wait", "group_interval", "repeat_interval", "watchdog_repeat_interval")(_check_duration)


class Catalog(Frozen):
    version: Literal[1]
    project: str
    runbook_base_url: str
    tenants: tuple[str, ...]
    components: tuple[Component, ...]
    label_sets: dict[str, tuple[str, ...]]
    buckets: dict[str, tuple[float, ...]]
    metrics: tuple[Metric, ...]
    slos: tuple[Slo, ...]
    burn_rate_tiers: tuple[BurnRateTier, ...]
    low_traffic_min_rate: float = Field(gt=0)
    alerts: tuple[Alert, ...]
    alerting: Alerting
    logs: Logs
    trails: Trails
    error_tokens: dict[str, ErrorToken]
    retention: Retention
    privacy: Privacy
    storage: Storage
    profiles: dict[Literal["local", "prod", "cluster"], Profile]

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def metrics_of(self, component: str) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if m.component == component)

    def http_metric(self, component: str, role: str) -> Metric:
        return next(m for m in self.metrics if m.component == component and m.http == role)

    def label_values(self, metric: Metric, label: str) -> tuple[str, ...]:
        """The closed set of values a label may take.

        `routes` means the component's route templates plus the debug endpoints; `tenants` the
        catalog's tenants plus `other` for anything unknown.
        """
        from vigia import conventions

        ref = metric.labels[label]
        if ref == "routes":
            return self.component(metric.component).route_templates + conventions.DEBUG_ROUTES
        if ref == "tenants":
            return self.tenants + (conventions.OTHER_TENANT,)
        return self.label_sets[ref]

    def bucket_bounds(self, metric: Metric) -> tuple[float, ...]:
        return self.buckets[metric.buckets] if metric.buckets else ()
