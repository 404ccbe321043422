"""Load `stack.yaml` into the typed model, with errors that name file, line and path.

Two steps, like sloth's LoadAPI -> MapSpecToModel: parse and validate the versioned document
(pydantic, unknown keys rejected), then cross-check references between sections. Every
problem is collected; `CatalogError` carries them all, each as `file:line: path: message`.
"""

from __future__ import annotations

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
    lines = _line_index(node)
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
    """References between sections: every name used is defined, every threshold measurable."""
    found: list[tuple[Path_, str]] = []
    components = {c.name for c in catalog.components}
    metrics = {m.name: m for m in catalog.metrics}

    for i, metric in enumerate(catalog.metrics):
        at = ("metrics", i)
        if metric.component not in components:
            found.append((at + ("component",), f"unknown component {metric.component!r}"))
        for label, ref in metric.labels.items():
            if ref not in ("routes", "tenants") and ref not in catalog.label_sets:
                found.append((at + ("labels", label), f"unknown label set {ref!r}"))
        if metric.buckets and metric.buckets not in catalog.buckets:
            found.append((at + ("buckets",), f"unknown bucket set {metric.buckets!r}"))
    for c in catalog.components:
        for role in ("requests", "duration"):
            if not any(m.component == c.name and m.http == role for m in catalog.metrics):
                found.append((("components",), f"component {c.name!r} has no metric with http: {role}"))

    def check_metric(at: Path_, name: str | None, matchers: dict[str, str] | None = None, kind: str | None = None):
        if name is None:
            return None
        metric = metrics.get(name)
        if metric is None:
            found.append((at + ("metric",), f"unknown metric {name!r}"))
            return None
        if kind and metric.type != kind:
            found.append((at + ("metric",), f"{name} is a {metric.type}, a {kind} is needed here"))
        for label in matchers or {}:
            if label not in metric.labels:
                found.append((at + ("errors", label), f"{name} has no label {label!r}"))
        return metric

    for i, slo in enumerate(catalog.slos):
        at = ("slos", i)
        if slo.component not in components:
            found.append((at + ("component",), f"unknown component {slo.component!r}"))
        kind = "histogram" if slo.kind == "latency" else "counter"
        metric = check_metric(at, slo.metric, slo.errors, kind)
        if metric and slo.kind == "latency" and metric.buckets in catalog.buckets:
            if slo.threshold_seconds not in catalog.bucket_bounds(metric):
                found.append((at + ("threshold_seconds",),
                              f"{slo.threshold_seconds} is not a bucket boundary of {metric.name} "
                              f"(buckets: {', '.join(f'{b:g}' for b in catalog.bucket_bounds(metric))})"))
    for i, alert in enumerate(catalog.alerts):
        at = ("alerts", i)
        if alert.component and alert.component not in components:
            found.append((at + ("component",), f"unknown component {alert.component!r}"))
        kind = {"latency_quantile": "histogram", "error_ratio": "counter", "spike": "counter"}.get(alert.kind)
        metric = check_metric(at, alert.metric, alert.errors, kind)
        if metric:
            for label in alert.by:
                if label not in metric.labels:
                    found.append((at + ("by",), f"{metric.name} has no label {label!r}"))
        if alert.kind == "spike" and alert.window and alert.baseline:
            if duration_seconds(alert.baseline) <= duration_seconds(alert.window):
                found.append((at + ("baseline",), "the baseline window must be longer than the window"))
    names = [a.name for a in catalog.alerts]
    for i, name in enumerate(names):
        if names.index(name) != i:
            found.append((("alerts", i, "name"), f"duplicate alert name {name!r}"))
    if "Watchdog" not in names:
        found.append((("alerts",), "a Watchdog alert is required: it proves the alerting path end to end"))
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


def _line_index(root: yaml.Node | None) -> dict[Path_, int]:
    """Map every path in the YAML document to its 1-based line."""
    index: dict[Path_, int] = {}

    def walk(node: yaml.Node, path: Path_) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                walk(value, child)
                index[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return index


def _nearest_line(lines: dict[Path_, int], path: Path_) -> int:
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 1)
