"""Prometheus metrics registered from the catalog, with label values clamped to closed sets.

A label value outside its set never reaches the registry: routes fall back to `unmatched`,
tenants to `other`, anything else raises (a programming error the tests catch).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from vigia import conventions as names
from vigia.model import Catalog, Metric

# The library's own metrics, on every component: what the logger and trail writer did.
SELF_METRICS = (
    (names.LOG_DROPPED_METRIC, "Log fields or records dropped by the server-blind rules, by reason.", ("reason",)),
    (names.TRAIL_WRITTEN_METRIC, "Trail records appended, by kind.", ("kind",)),
    ("vigia_slow_operations_total", "Operations slower than their slow-operation threshold, by name.", ("operation",)),
)


# Counted by their owner as plain integers (see `Metrics.count_from`).
COUNTED_METRICS = {names.LOG_WRITTEN_METRIC: "Log records by outcome (written or sampled_out)."}


class CountsCollector:
    """A counter family read at scrape time from a dict of label value -> count."""

    def __init__(self, name: str, help_text: str, label: str, counts: dict[str, int]):
        self.name, self.help_text, self.label, self.counts = name, help_text, label, counts

    def collect(self):
        family = CounterMetricFamily(self.name.removesuffix("_total"), self.help_text, labels=[self.label])
        for value, count in sorted(self.counts.items()):
            family.add_metric([value], count)
        yield family


class Metrics:
    def __init__(self, catalog: Catalog, component: str, registry: CollectorRegistry | None = None):
        self.catalog = catalog
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, object] = {}
        self._specs: dict[str, Metric] = {}
        self._allowed: dict[str, dict[str, frozenset[str]]] = {}
        for spec in catalog.metrics_of(component):
            self._register(spec)
        for name, help_text, labels in SELF_METRICS:
            self._metrics[name] = Counter(name.removesuffix("_total"), help_text, labels, registry=self.registry)

    def _register(self, spec: Metric) -> None:
        labels = tuple(spec.labels)
        base = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
        if spec.type == "counter":
            metric = Counter(base, spec.help, labels, registry=self.registry)
        elif spec.type == "gauge":
            metric = Gauge(base, spec.help, labels, registry=self.registry)
        else:
            metric = Histogram(base, spec.help, labels, buckets=self.catalog.bucket_bounds(spec), registry=self.registry)
        self._metrics[spec.name] = metric
        self._specs[spec.name] = spec
        self._allowed[spec.name] = {label: frozenset(self.catalog.label_values(spec, label)) for label in labels}

    def count_from(self, name: str, label: str, counts: dict[str, int]) -> None:
        """Expose `counts` as the counter `name`, for hot paths where an increment must be an int add."""
        self.registry.register(CountsCollector(name, COUNTED_METRICS[name], label, counts))

    def get(self, name: str):
        return self._metrics[name]

    counter = gauge = histogram = get

    def labels(self, name: str, **labels: str):
        """The labelled child, each value clamped to the catalog's closed set."""
        if not labels:  # an unlabelled metric is its own child
            return self._metrics[name]
        allowed = self._allowed.get(name)
        if allowed is None:  # the library's own metrics
            return self._metrics[name].labels(**labels)
        return self._metrics[name].labels(**{k: self.clamp(name, k, str(v)) for k, v in labels.items()})

    def clamp(self, name: str, label: str, value: str) -> str:
        allowed = self._allowed[name][label]
        if value in allowed:
            return value
        ref = self._specs[name].labels[label]
        if ref == "routes":
            return names.UNMATCHED_ROUTE
        if ref == "tenants":
            return names.OTHER_TENANT
        if ref == "method":
            return names.OTHER_METHOD
        raise ValueError(f"{value!r} is not an allowed value of {name}{{{label}}}")
