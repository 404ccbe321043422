"""Load `stack.yaml` into the typed model, with errors that name file, line and path.

Two steps, like sloth's LoadAPI -> MapSpecToModel: parse and validate the versioned document
(pydantic, unknown keys rejected), then cross-check references between sections. Every
problem is collected; `CatalogError` carries them all, each as `file:line: path: message`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from vigia import conventions
from vigia.model import Catalog, duration_seconds

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class CatalogError(Exception):
    """A catalog that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load(path: str | Path) -> Catalog:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError([Problem(str(path), 0, "", f"cannot read catalog: {exc.strerror}")]) from None
    return loads(text, str(path))


def loads(text: str, filename: str = "stack.yaml") -> Catalog:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        reason = getattr(exc, "problem", None) or str(exc)
        raise CatalogError([Problem(filename, line, "", f"invalid YAML: {reason}")]) from None
    lines, duplicates = _line_index(node)
    if duplicates:
        raise CatalogError([Problem(filename, line, _dotted(path), f"duplicate key (first on line {first})")
                            for path, line, first in duplicates])
    if not isinstance(data, dict):
        raise CatalogError([Problem(filename, 1, "", "the catalog must be a mapping")])

    def problem(path: Path_, message: str) -> Problem:
        return Problem(filename, _nearest_line(lines, path), _dotted(path), message)

    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError([problem(_loc(err["loc"]), _message(err)) for err in exc.errors()]) from None
    problems = [problem(path, message) for path, message in cross_check(catalog)]
    if problems:
        raise CatalogError(problems)
    return catalog


def cross_check(catalog: Catalog) -> list[tuple[Path_, str]]:
    """References between sections: every name used is defined, every threshold measurable,
    and every rule the catalog asks for can fire and has generated tests that can tell."""
    found: list[tuple[Path_, str]] = []
    components = {c.name for c in catalog.components}
    metrics = {m.name: m for m in catalog.metrics}
    found += _check_metrics(catalog, components)
    # Metrics whose labels resolve (known component, known label sets): matchers can be checked.
    sound = {name: m for name, m in metrics.items() if m.component in components
             and all(ref in ("routes", "tenants") or ref in catalog.label_sets for ref in m.labels.values())}

    def check_metric(at: Path_, name: str | None, matchers: dict[str, str] | None = None, kind: str | None = None):
        if name is None:
            return None
        metric = metrics.get(name)
        if metric is None:
            found.append((at + ("metric",), f"unknown metric {name!r}"))
            return None
        if kind and metric.type != kind:
            found.append((at + ("metric",), f"{name} is a {metric.type}, a {kind} is needed here"))
        for label, pattern in (matchers or {}).items():
            if label not in metric.labels:
                found.append((at + ("errors", label), f"{name} has no label {label!r}"))
            elif name in sound:
                message = _matcher_problem(catalog.label_values(metric, label), pattern)
                if message:
                    found.append((at + ("errors", label), f"{label}={pattern!r} {message}"))
        return metric

    for i, slo in enumerate(catalog.slos):
        at = ("slos", i)
        if slo.component not in components:
            found.append((at + ("component",), f"unknown component {slo.component!r}"))
        kind = "histogram" if slo.kind == "latency" else "counter"
        metric = check_metric(at, slo.metric, slo.errors, kind)
        if metric and slo.kind == "latency" and metric.buckets in catalog.buckets:
            found += _boundary(catalog, metric, slo.threshold_seconds, at + ("threshold_seconds",), needs_above=False)
        for tier in catalog.burn_rate_tiers:
            if tier.factor * slo.error_budget >= 1:
                found.append((at + ("objective",), f"the {tier.factor:g}x tier would need more than 100 % bad events "
                                                   f"(budget {slo.error_budget:.2%}): lower the factor or raise the objective"))
                break
    found += _check_tiers(catalog)
    for i, alert in enumerate(catalog.alerts):
        at = ("alerts", i)
        if alert.component and alert.component not in components:
            found.append((at + ("component",), f"unknown component {alert.component!r}"))
        kind = {"latency_quantile": "histogram", "error_ratio": "counter", "spike": "counter"}.get(alert.kind)
        metric = check_metric(at, alert.metric, alert.errors, kind)
        if metric:
            for j, label in enumerate(alert.by):
                if label not in metric.labels:
                    found.append((at + ("by", j), f"{metric.name} has no label {label!r}"))
        if metric and alert.kind == "latency_quantile" and metric.buckets in catalog.buckets:
            found += _boundary(catalog, metric, alert.threshold, at + ("threshold",), needs_above=True)
        found += _check_alert_windows(alert, at)
    names = [a.name for a in catalog.alerts]
    for i, name in enumerate(names):
        if names.index(name) != i:
            found.append((("alerts", i, "name"), f"duplicate alert name {name!r}"))
    if "Watchdog" not in names:
        found.append((("alerts",), "a Watchdog alert is required: it proves the alerting path end to end"))
    found += _check_dashboards(catalog, sound)
    all_routes = {r for c in catalog.components for r in c.route_templates}
    for key in catalog.logs.sampling.routes:
        if key not in all_routes:
            found.append((("logs", "sampling", "routes", key), f"unknown route {key!r}"))
    for key in catalog.logs.sampling.tools:
        if key not in catalog.label_sets.get("tool", ()):
            found.append((("logs", "sampling", "tools", key), f"unknown tool {key!r}"))
    for field in ("ts", "component", "ok"):
        if field not in catalog.logs.fields:
            found.append((("logs", "fields"), f"the field list must contain {field!r}"))
    if conventions.OTHER_METHOD not in catalog.label_sets.get("method", (conventions.OTHER_METHOD,)):
        found.append((("label_sets", "method"), f"must contain {conventions.OTHER_METHOD}: the label of any other HTTP method"))
    for token in ("BACKPRESSURE", "RATE_LIMIT", "INTERNAL"):
        if token not in catalog.error_tokens:
            found.append((("error_tokens",), f"the ErrorToken vocabulary must contain {token}"))
    for token, spec in catalog.error_tokens.items():
        if token in ("BACKPRESSURE", "RATE_LIMIT") and not spec.retry_after:
            found.append((("error_tokens", token, "retry_after"), f"{token} must carry retry_after_ms"))
    return found


# What the renderers and dashboards read from each component's HTTP metrics.
HTTP_METRIC_SHAPE = {"requests": ("counter", ("route", "code")), "duration": ("histogram", ("route",))}


def _check_metrics(catalog: Catalog, components: set[str]) -> list[tuple[Path_, str]]:
    found: list[tuple[Path_, str]] = []
    for i, metric in enumerate(catalog.metrics):
        at = ("metrics", i)
        if metric.component not in components:
            found.append((at + ("component",), f"unknown component {metric.component!r}"))
        for label, ref in metric.labels.items():
            if ref not in ("routes", "tenants") and ref not in catalog.label_sets:
                found.append((at + ("labels", label), f"unknown label set {ref!r}"))
        if metric.buckets and metric.buckets not in catalog.buckets:
            found.append((at + ("buckets",), f"unknown bucket set {metric.buckets!r}"))
        needs = HTTP_METRIC_SHAPE.get(metric.http)
        if needs and (metric.type != needs[0] or not set(needs[1]) <= set(metric.labels)):
            found.append((at + ("http",), f"an http: {metric.http} metric is a {needs[0]} with the labels {', '.join(needs[1])}"))
    for i, c in enumerate(catalog.components):
        for role in ("requests", "duration"):
            if not any(m.component == c.name and m.http == role for m in catalog.metrics):
                found.append((("components", i), f"component {c.name!r} has no metric with http: {role}"))
    return found


def _matcher_problem(values: tuple[str, ...], pattern: str) -> str | None:
    """A label matcher must select some of the label's closed set of values, and not all of them."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        return f"is not a valid regular expression: {exc}"
    matched = [v for v in values if regex.fullmatch(v)]
    if not matched:
        return f"matches none of the label's values ({', '.join(repr(v) for v in values)})"
    if len(matched) == len(values):
        return "matches every value of the label: no event would count as good"
    return None


def _boundary(catalog: Catalog, metric, threshold: float | None, at: Path_, needs_above: bool) -> list[tuple[Path_, str]]:
    """A latency threshold must be a bucket boundary (and, for a quantile alert, not the last one)."""
    bounds = catalog.bucket_bounds(metric)
    listing = ", ".join(f"{b:g}" for b in bounds)
    if threshold not in bounds:
        return [(at, f"{threshold:g} is not a bucket boundary of {metric.name} (buckets: {listing})")]
    if needs_above and threshold == bounds[-1]:
        return [(at, f"{threshold:g} is the last bucket boundary of {metric.name}: a quantile cannot be measured above it")]
    return []


def _check_tiers(catalog: Catalog) -> list[tuple[Path_, str]]:
    """Tiers run from the fastest burn to the slowest: the factor falls and the windows grow."""
    found: list[tuple[Path_, str]] = []
    tiers = catalog.burn_rate_tiers
    if not tiers:
        return [(("burn_rate_tiers",), "at least one tier is needed")]
    for i in range(1, len(tiers)):
        at = ("burn_rate_tiers", i)
        if tiers[i].factor >= tiers[i - 1].factor:
            found.append((at + ("factor",), f"must be below the previous tier's ({tiers[i - 1].factor:g}): list tiers from the fastest burn"))
        if duration_seconds(tiers[i].long) < 2 * duration_seconds(tiers[i - 1].long):
            found.append((at + ("long",), f"must be at least twice the previous tier's long window ({tiers[i - 1].long})"))
    retention = catalog.retention.metrics_days * 86400
    for i, tier in enumerate(tiers):
        if duration_seconds(tier.long) > retention:
            found.append((("burn_rate_tiers", i, "long"),
                          f"longer than the metrics retention ({catalog.retention.metrics_days}d)"))
    return found


def _check_alert_windows(alert, at: Path_) -> list[tuple[Path_, str]]:
    found: list[tuple[Path_, str]] = []
    if alert.kind == "latency_quantile" and len(set(alert.windows)) != len(alert.windows):
        found.append((at + ("windows",), "windows must differ"))
    if alert.kind == "error_ratio":
        ordered = sorted(enumerate(alert.conditions), key=lambda c: duration_seconds(c[1].window))
        for (_, shorter), (j, longer) in zip(ordered, ordered[1:]):
            if duration_seconds(longer.window) == duration_seconds(shorter.window):
                found.append((at + ("conditions", j, "window"), f"two conditions over {longer.window}"))
            elif longer.above >= shorter.above:
                found.append((at + ("conditions", j, "above"),
                              f"a longer window needs a lower threshold than the {shorter.window} one ({shorter.above:g}), "
                              f"or the shorter window always fires first"))
    if alert.kind == "spike" and alert.window and alert.baseline and alert.factor:
        reach = alert.factor * (duration_seconds(alert.window) + duration_seconds(alert.for_))
        if duration_seconds(alert.baseline) <= reach:
            found.append((at + ("baseline",), f"must be longer than factor x (window + for) = {reach / 60:g}m: the spike "
                                              f"itself raises the baseline, so no spike could ever fire"))
    return found


def _check_dashboards(catalog: Catalog, sound: dict) -> list[tuple[Path_, str]]:
    """Every metric the dashboards name (beyond the HTTP and SLO metrics), with the labels they use."""
    from dashboards.panels import READS

    found: list[tuple[Path_, str]] = []
    index = {m.name: i for i, m in enumerate(catalog.metrics)}
    for dashboard, name, kind, labels in READS:
        if name not in index:
            found.append((("metrics",), f"the {dashboard} dashboard reads {name}, which the catalog does not define"))
            continue
        at, metric = ("metrics", index[name]), catalog.metrics[index[name]]
        if metric.type != kind:
            found.append((at + ("type",), f"the {dashboard} dashboard reads {name} as a {kind}"))
        for label, value in labels.items():
            if label not in metric.labels:
                found.append((at + ("labels",), f"the {dashboard} dashboard reads {name} by {label!r}, a label it does not have"))
            elif value is not None and name in sound and value not in catalog.label_values(metric, label):
                found.append((at + ("labels", label),
                              f"the {dashboard} dashboard reads {name} with {label}={value!r}, outside the label's values"))
    return found


def _loc(loc: tuple) -> Path_:
    """pydantic's loc, without the model-validator bits it appends for unions and literals."""
    return tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part.startswith("function-"))))


def _message(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown key (not part of the catalog schema)"
    if err["type"] == "missing":
        return "required key is missing"
    msg = msg.replace("Input should be less than", "must be <").replace("Input should be greater than", "must be >")
    return msg


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_index(root: yaml.Node | None) -> tuple[dict[Path_, int], list[tuple[Path_, int, int]]]:
    """Map every path in the YAML document to its 1-based line; list duplicate keys (path, line, first line)."""
    index: dict[Path_, int] = {}
    duplicates: list[tuple[Path_, int, int]] = []

    def walk(node: yaml.Node, path: Path_) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else repr(key.value)
                child = path + (name,)
                line = key.start_mark.line + 1
                if name in seen:
                    duplicates.append((child, line, seen[name]))
                    continue
                seen[name] = line
                walk(value, child)
                index[child] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return index, duplicates


def _nearest_line(lines: dict[Path_, int], path: Path_) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)
