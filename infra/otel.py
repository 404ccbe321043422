"""OpenTelemetry Collector (contrib) pipelines: OTLP in; Prometheus and ClickHouse out.

Server-blind at the collector too, whatever a sender put in: `transform/server_blind` keeps only
the catalog's log fields as log and span attributes, only the service name and instance as
resource attributes, no scope attributes, no log body, no span status message, and renames each
span to its method and route template; `filter/server_blind` drops every span event (exception
events carry messages). Span links keep their ids and attributes: OTTL cannot reach them here.

Metrics: the services are scraped directly on /_metrics, so `filter/scraped_directly` drops what
they may also push over OTLP; the Prometheus exporter (scraped as job `otel-collector`) carries only
what reaches the collector from elsewhere (e.g. an edge worker), and nothing is counted twice.
"""

from __future__ import annotations

from vigia import conventions as names
from vigia.model import Catalog

# Every component type used below, with the contrib module that provides it. A test checks that
# the rendered config uses no other type.
CONTRIB_COMPONENTS = {
    "receivers": {"otlp": "go.opentelemetry.io/collector/receiver/otlpreceiver"},
    "processors": {
        "memory_limiter": "go.opentelemetry.io/collector/processor/memorylimiterprocessor",
        "batch": "go.opentelemetry.io/collector/processor/batchprocessor",
        "transform": "github.com/open-telemetry/opentelemetry-collector-contrib/processor/transformprocessor",
        "filter": "github.com/open-telemetry/opentelemetry-collector-contrib/processor/filterprocessor",
        "resource": "github.com/open-telemetry/opentelemetry-collector-contrib/processor/resourceprocessor",
    },
    "exporters": {
        "prometheus": "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/prometheusexporter",
        "clickhouse": "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/clickhouseexporter",
    },
    "extensions": {"health_check": "github.com/open-telemetry/opentelemetry-collector-contrib/extension/healthcheckextension"},
}


def render(catalog: Catalog, profile: str) -> dict[str, object]:
    return {names.OTEL_CONFIG: config(catalog, profile)}


# Resource attributes that survive the collector: which service and which instance sent it.
RESOURCE_KEYS = ("service.name", "service.instance.id")
# Span attributes kept besides the catalog's log fields (the ones the collectors library sets).
SPAN_KEYS = ("http.route", "http.request.method", "http.response.status_code")


def _quoted(keys) -> str:
    return ", ".join(f'"{k}"' for k in keys)


def server_blind(catalog: Catalog) -> dict:
    """The transform processor that strips logs and spans down to what the catalog allows."""
    fields = tuple(catalog.logs.fields)
    common = [
        {"context": "resource", "statements": [f"keep_keys(attributes, [{_quoted(RESOURCE_KEYS)}])"]},
        {"context": "scope", "statements": ['delete_matching_keys(attributes, ".*")']},
    ]
    route, method = 'attributes["http.route"]', 'attributes["http.request.method"]'
    return {
        "error_mode": "ignore",
        "log_statements": common + [{"context": "log", "statements": [
            f"keep_keys(attributes, [{_quoted(fields)}])",
            'set(body, "")',
        ]}],
        "trace_statements": common + [{"context": "span", "statements": [
            f"keep_keys(attributes, [{_quoted(fields + SPAN_KEYS)}])",
            f'set(name, Concat([{method}, {route}], " ")) where {route} != nil and {method} != nil',
            f'set(name, "request") where {route} == nil or {method} == nil',
            'set(status.message, "")',
        ]}],
    }


def config(catalog: Catalog, profile: str) -> dict:
    clickhouse_host = "127.0.0.1" if catalog.profiles[profile].host == "127.0.0.1" else "clickhouse"
    scraped = "|".join(c.name for c in catalog.components)
    return {
        "extensions": {"health_check": {"endpoint": "0.0.0.0:13133"}},
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"},
                                             "http": {"endpoint": "0.0.0.0:4318"}}}},
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
            "batch": {"send_batch_size": 8192, "timeout": "5s"},
            "resource": {"attributes": [{"key": "deployment.profile", "value": profile, "action": "upsert"}]},
            "filter/scraped_directly": {"error_mode": "ignore", "metrics": {"metric": [
                f'IsMatch(resource.attributes["service.name"], "^({scraped})$")']}},
            "filter/server_blind": {"error_mode": "ignore", "traces": {"spanevent": ["true"]}},
            "transform/server_blind": server_blind(catalog),
        },
        "exporters": {
            "prometheus": {"endpoint": f"0.0.0.0:{names.OTEL_PROMETHEUS_PORT}", "namespace": "",
                           "resource_to_telemetry_conversion": {"enabled": False}},
            "clickhouse": {
                "endpoint": f"tcp://{clickhouse_host}:9000",
                "database": catalog.storage.clickhouse_database,
                "username": "otel_writer",
                "password": "${env:CLICKHOUSE_OTEL_PASSWORD}",
                "logs_table_name": "otel_logs",
                "traces_table_name": "otel_traces",
                "ttl": f"{catalog.retention.logs_days * 24}h",
                "create_schema": True,
            },
        },
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "metrics": {"receivers": ["otlp"],
                            "processors": ["memory_limiter", "filter/scraped_directly", "resource", "batch"],
                            "exporters": ["prometheus"]},
                "logs": {"receivers": ["otlp"], "processors": ["memory_limiter", "transform/server_blind", "resource", "batch"],
                         "exporters": ["clickhouse"]},
                "traces": {"receivers": ["otlp"],
                           "processors": ["memory_limiter", "filter/server_blind", "transform/server_blind", "resource", "batch"],
                           "exporters": ["clickhouse"]},
            },
        },
    }
