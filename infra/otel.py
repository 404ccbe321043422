"""OpenTelemetry Collector (contrib) pipelines: OTLP in; Prometheus and ClickHouse out.

Server-blind at the collector too: the `transform/server_blind` processor keeps only the
catalog's log fields as attributes and drops every log body, whatever a sender put there.
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


def config(catalog: Catalog, profile: str) -> dict:
    fields = ", ".join(f'"{f}"' for f in catalog.logs.fields)
    clickhouse_host = "127.0.0.1" if catalog.profiles[profile].host == "127.0.0.1" else "clickhouse"
    return {
        "extensions": {"health_check": {"endpoint": "0.0.0.0:13133"}},
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"},
                                             "http": {"endpoint": "0.0.0.0:4318"}}}},
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
            "batch": {"send_batch_size": 8192, "timeout": "5s"},
            "resource": {"attributes": [{"key": "deployment.profile", "value": profile, "action": "upsert"}]},
            "transform/server_blind": {
                "error_mode": "ignore",
                "log_statements": [{"context": "log", "statements": [
                    f"keep_keys(attributes, [{fields}])",
                    'set(body, "")',
                ]}],
                "trace_statements": [{"context": "span", "statements": [
                    f"keep_keys(attributes, [{fields}, \"http.route\", \"http.request.method\", "
                    f"\"http.response.status_code\"])",
                ]}],
            },
        },
        "exporters": {
            "prometheus": {"endpoint": "0.0.0.0:8889", "namespace": "", "resource_to_telemetry_conversion": {"enabled": False}},
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
                "metrics": {"receivers": ["otlp"], "processors": ["memory_limiter", "resource", "batch"],
                            "exporters": ["prometheus"]},
                "logs": {"receivers": ["otlp"], "processors": ["memory_limiter", "transform/server_blind", "resource", "batch"],
                         "exporters": ["clickhouse"]},
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "transform/server_blind", "resource", "batch"],
                           "exporters": ["clickhouse"]},
            },
        },
    }
