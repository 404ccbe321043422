"""The typed, immutable catalog model.

`stack.yaml` is parsed once into these classes (pydantic, unknown keys rejected); after that,
nothing reads YAML again. Renderers, the collectors library and the jobs take a `Catalog`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator

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


def _whole_minutes(value: str) -> str:
    _check_duration(value)
    if duration_seconds(value) % 60:
        raise ValueError(f"{value!r} must be a whole number of minutes (the generated rule tests step by minutes)")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
# Windows and `for` of rules that have generated promtool tests.
Minutes = Annotated[str, AfterValidator(_whole_minutes)]


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
    threshold_seconds: float | None = Field(default=None, gt=0)
    # Events per second the long window needs before a burn alert may fire (default: the catalog's).
    min_rate: float | None = Field(default=None, gt=0)

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
    """One multi-window tier: alert when the bad-event ratio exceeds `factor` x the error budget
    over both `long` and `short` (SRE workbook ch. 5: short = long / 12)."""

    severity: Literal["page", "ticket"]
    factor: float = Field(gt=0)
    long: Minutes
    short: Minutes
    for_: Minutes = Field(alias="for")

    @field_validator("short")
    @classmethod
    def _short(cls, value: str, info: ValidationInfo) -> str:
        long = info.data.get("long")
        if long and duration_seconds(value) * 4 > duration_seconds(long):
            raise ValueError(f"must be at most a quarter of the long window ({long})")
        return value

    @field_validator("for_")
    @classmethod
    def _for(cls, value: str, info: ValidationInfo) -> str:
        short = info.data.get("short")
        if short and duration_seconds(value) >= duration_seconds(short):
            raise ValueError(f"must be shorter than the short window ({short})")
        return value


class Condition(Frozen):
    window: Minutes
    above: float = Field(gt=0, lt=1)


class Alert(Frozen):
    """A blueprint alert. `latency_quantile` fires when the quantile is above `threshold` over
    every window; `error_ratio` when any condition holds (the ratio over its window is above its
    `above`); `spike` when a group's rate over `window` exceeds `factor` x its rate over `baseline`.
    Ratio and spike alerts stay quiet below `min_rate` events per second (default: the catalog's)."""

    name: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$")
    kind: Literal["latency_quantile", "error_ratio", "spike", "threshold", "target_down", "absent", "watchdog"]
    severity: Literal["page", "ticket", "none"]
    summary: str
    component: str | None = None
    metric: str | None = None
    for_: Minutes = Field(default="0m", alias="for")
    # latency_quantile
    quantile: float | None = Field(default=None, gt=0, lt=1)
    threshold: float | None = Field(default=None, gt=0)
    windows: tuple[Minutes, ...] = ()
    # error_ratio
    errors: dict[str, str] = Field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()
    # spike
    by: tuple[str, ...] = ()
    window: Minutes | None = None
    baseline: Minutes | None = None
    factor: float | None = Field(default=None, gt=1)
    # error_ratio, spike
    min_rate: float | None = Field(default=None, gt=0)
    # threshold
    op: Literal[">", ">=", "<", "<=", "=="] | None = None
    value: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> "Alert":
        needs = {
            "latency_quantile": ("component", "metric", "quantile", "threshold", "windows"),
            "error_ratio": ("component", "metric", "errors", "conditions"),
            "spike": ("component", "metric", "by", "window", "baseline", "factor"),
            "threshold": ("component", "metric", "op", "value"),
            "absent": ("component", "metric"),
            "target_down": (),
            "watchdog": (),
        }[self.kind]
        missing = [name for name in needs if getattr(self, name) in (None, (), {})]
        if missing:
            raise ValueError(f"a {self.kind} alert needs {', '.join(missing)}")
        return self


LogFieldType = Literal["timestamp", "token", "route", "id", "bool", "int"]
TrailFieldType = Literal["token", "route", "id", "int", "bool", "args_min"]


class Sampling(Frozen):
    success: float = Field(ge=0, le=1)
    error: float = Field(ge=0, le=1)
    spike: float = Field(ge=0, le=1)
    routes: dict[str, float] = Field(default_factory=dict)
    tools: dict[str, float] = Field(default_factory=dict)


# Log field names become JSON keys and ClickHouse columns: plain identifiers only.
FieldName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$")]


class Logs(Frozen):
    fields: dict[FieldName, LogFieldType]
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

    def policy(self, chosen: int | None = None) -> int:
        """The one audit retention the store's lifecycle, MinIO and ClickHouse apply: `chosen`
        (an operator's choice within min..max) or the default."""
        if chosen is None:
            return self.default
        if not self.min <= chosen <= self.max:
            raise ValueError(f"audit retention must be {self.min}..{self.max} days (retention.audit_days), not {chosen}")
        return chosen

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
    scrape_interval: Duration
    evaluation_interval: Duration
    host: str
    prometheus_port: int
    alertmanager_port: int
    webhook_sink_port: int
    shards: int = Field(default=1, ge=1)
    remote_write_url: str | None = None
    # The remote store's Prometheus query API (Grafana's datasource when scraping is sharded).
    query_url: str | None = None
    clickhouse_cluster: str | None = None

    @model_validator(mode="after")
    def _sharded(self) -> "Profile":
        if self.shards > 1 and not (self.remote_write_url and self.query_url):
            raise ValueError("sharded scraping needs remote_write_url and query_url: the shards only scrape; "
                             "the remote store holds the data, evaluates the rules and answers queries")
        return self


class Alerting(Frozen):
    smtp_smarthost: str
    smtp_from: str
    smtp_username: str
    page_email_to: str
    group_wait: Duration
    group_interval: Duration
    repeat_interval: Duration
    watchdog_repeat_interval: Duration


class Catalog(Frozen):
    version: Literal[1]
    project: str
    runbook_base_url: str
    tenants: tuple[str, ...] = Field(min_length=1)
    components: tuple[Component, ...] = Field(min_length=1)
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

    def min_rate(self, item: "Slo | Alert") -> float:
        """Events per second an SLO's burn alerts (or a ratio or spike alert) need before they may fire."""
        return item.min_rate if item.min_rate is not None else self.low_traffic_min_rate

    def sli_windows(self) -> tuple[str, ...]:
        """Every window the burn-rate tiers read, shortest first: the SLI ratios are recorded over these."""
        windows = {w for tier in self.burn_rate_tiers for w in (tier.short, tier.long)}
        return tuple(sorted(windows, key=duration_seconds))
