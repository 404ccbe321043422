"""PromQL fragments built from the catalog: selectors, ratios and quantiles, as plain strings."""

from __future__ import annotations

from vigia import conventions as names
from vigia.model import Catalog, Metric

# A catalog matcher value is a regex when it uses regex syntax (e.g. code "5..").
REGEX_CHARS = set(".*+?|[]()^$")


def matchers(match: dict[str, str], extra: str = "") -> str:
    """`{code=~"5..", ok="false"}`; a value with regex characters becomes a regex matcher."""
    parts = [f'{label}{"=~" if REGEX_CHARS & set(value) else "="}"{value}"' for label, value in match.items()]
    if extra:
        parts.append(extra)
    return "{" + ", ".join(parts) + "}" if parts else ""


def scope(catalog: Catalog, metric: Metric) -> str:
    """Only internal routes count towards SLOs: debug endpoints are excluded."""
    return names.INTERNAL_ROUTES if "route" in metric.labels else ""


def rate(name: str, selector: str, window: str) -> str:
    return f"sum(rate({name}{selector}[{window}]))"


def error_ratio(catalog: Catalog, metric: Metric, errors: dict[str, str], window: str) -> str:
    """Bad events over all events for a counter, over one window."""
    base = scope(catalog, metric)
    bad = rate(metric.name, matchers(errors, base), window)
    total = rate(metric.name, matchers({}, base), window)
    return f"{bad} / {total}"


def latency_error_ratio(catalog: Catalog, metric: Metric, threshold: float, window: str) -> str:
    """Share of observations slower than the threshold: 1 - good/total from the histogram."""
    base = scope(catalog, metric)
    le = f'le="{le_label(threshold)}"'
    good = rate(f"{metric.name}_bucket", "{" + ", ".join(filter(None, [le, base])) + "}", window)
    total = rate(f"{metric.name}_count", matchers({}, base), window)
    return f"1 - ({good} / {total})"


def event_rate(catalog: Catalog, metric: Metric, window: str) -> str:
    """Events per second over a window, for the low-traffic guard."""
    name = f"{metric.name}_count" if metric.type == "histogram" else metric.name
    return rate(name, matchers({}, scope(catalog, metric)), window)


def quantile(metric: Metric, q: float, window: str, by: tuple[str, ...], selector: str = "") -> str:
    group = ", ".join(("le",) + by)
    inner = "{" + selector + "}" if selector else ""
    return f"histogram_quantile({q:g}, sum by ({group}) (rate({metric.name}_bucket{inner}[{window}])))"


def le_label(value: float) -> str:
    """The `le` label as client_python writes it: 0.3 -> "0.3", 1 -> "1.0"."""
    return repr(float(value))
