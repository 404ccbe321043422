"""docker-compose for the production path: the whole stack on one docker host (`prod`).

No secret is written here: every credential is `${VAR:?...}` from the `.env` a user copies from
`.env.example`; the SMTP password reaches Alertmanager as a compose secret file.
"""

from __future__ import annotations

from vigia import conventions as names
from vigia.model import Catalog

IMAGES = {
    "prometheus": "prom/prometheus:v2.53.2",
    "alertmanager": "prom/alertmanager:v0.27.0",
    "grafana": "grafana/grafana:11.2.0",
    "otel-collector": "otel/opentelemetry-collector-contrib:0.108.0",
    "minio": "minio/minio:RELEASE.2024-08-29T01-40-52Z",
    "minio-init": "minio/mc:RELEASE.2024-08-26T10-49-58Z",
    "clickhouse": "clickhouse/clickhouse-server:24.8",
}
VIGIA_IMAGE = "${VIGIA_IMAGE:-vigia:0.1.0}"

# Every variable the compose file reads, with what it is for (rendered into .env.example).
ENV_VARS = (
    ("GRAFANA_ADMIN_USER", "admin", "Grafana administrator login."),
    ("GRAFANA_ADMIN_PASSWORD", "generate-me", "Grafana administrator password (openssl rand -base64 24)."),
    ("MINIO_ROOT_USER", "vigia-minio", "MinIO root user; the rollup job uses it as its S3 access key."),
    ("MINIO_ROOT_PASSWORD", "generate-me", "MinIO root password, at least 8 characters (openssl rand -base64 24)."),
    ("CLICKHOUSE_ADMIN_PASSWORD", "generate-me", "ClickHouse `default` user's password, used by the rollup job."),
    ("CLICKHOUSE_GRAFANA_PASSWORD", "generate-me", "Password of the read-only ClickHouse user grafana_ro."),
    ("CLICKHOUSE_OTEL_PASSWORD", "generate-me", "Password of the ClickHouse user otel_writer (OTel Collector)."),
    ("VIGIA_ADMIN_TOKEN", "generate-me", "Token the services require on /_reload and POST /_flags."),
    ("SMTP_PASSWORD_FILE", "./secrets/smtp_password", "File holding the SMTP password Alertmanager uses for e-mail pages."),
)


def _env(name: str) -> str:
    return f"${{{name}:?set {name} in .env (see .env.example)}}"


def render(catalog: Catalog, profile: str) -> dict[str, object]:
    """One docker host runs one Prometheus: a sharded profile (`cluster`) gets no compose file."""
    if catalog.profiles[profile].shards > 1:
        return {}
    return {names.COMPOSE_FILE: compose(catalog, profile, root="."), ".env.example": env_example()}


def env_example() -> str:
    lines = ["# Copy to .env and replace every generate-me. Never commit .env."]
    for name, value, doc in ENV_VARS:
        lines += [f"# {doc}", f"{name}={value}"]
    return "\n".join(lines) + "\n"


def compose(catalog: Catalog, profile: str, root: str, build: str | None = None) -> dict:
    """`root` is the rendered tree's path relative to the compose file; `build` the repo to build vigia from."""
    prof = catalog.profiles[profile]
    s3 = {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": _env("MINIO_ROOT_USER"),
          "AWS_SECRET_ACCESS_KEY": _env("MINIO_ROOT_PASSWORD"), "AWS_DEFAULT_REGION": "us-east-1"}
    vigia_base = {"image": VIGIA_IMAGE}
    if build:
        vigia_base["build"] = {"context": build}
    services: dict = {
        "prometheus": {
            "image": IMAGES["prometheus"],
            "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                        f"--storage.tsdb.retention.time={catalog.retention.metrics_days}d", "--web.enable-lifecycle"],
            "volumes": [f"{root}/prometheus:/etc/prometheus:ro", "prometheus-data:/prometheus"],
            "ports": [f"{prof.prometheus_port}:9090"],
            "healthcheck": {"test": ["CMD", "wget", "-qO-", "http://localhost:9090/-/ready"], "interval": "10s"},
        },
        "alertmanager": {
            "image": IMAGES["alertmanager"],
            "command": ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"],
            "volumes": [f"{root}/alertmanager:/etc/alertmanager:ro", "alertmanager-data:/alertmanager"],
            "secrets": [{"source": "smtp_password", "target": "/etc/alertmanager/secrets/smtp_password"}],
            "ports": [f"{prof.alertmanager_port}:9093"],
        },
        "alert-sink": dict(vigia_base, command=["sink", "--port", str(prof.webhook_sink_port), "--out", "/data/alerts"],
                           volumes=["alerts:/data/alerts"]),
        "grafana": {
            "image": IMAGES["grafana"],
            "environment": {
                "GF_SECURITY_ADMIN_USER": _env("GRAFANA_ADMIN_USER"),
                "GF_SECURITY_ADMIN_PASSWORD": _env("GRAFANA_ADMIN_PASSWORD"),
                "GF_INSTALL_PLUGINS": "grafana-clickhouse-datasource",
                "GF_USERS_ALLOW_SIGN_UP": "false",
                "CLICKHOUSE_GRAFANA_PASSWORD": _env("CLICKHOUSE_GRAFANA_PASSWORD"),
            },
            "volumes": [f"{root}/grafana/provisioning:/etc/grafana/provisioning:ro",
                        f"{root}/grafana/dashboards:/var/lib/grafana/dashboards:ro", "grafana-data:/var/lib/grafana"],
            "ports": ["3000:3000"],
            "depends_on": ["prometheus", "clickhouse"],
        },
        "otel-collector": {
            "image": IMAGES["otel-collector"],
            "command": ["--config=/etc/otelcol/config.yaml"],
            "environment": {"CLICKHOUSE_OTEL_PASSWORD": _env("CLICKHOUSE_OTEL_PASSWORD")},
            "volumes": [f"{root}/otel-collector/config.yaml:/etc/otelcol/config.yaml:ro"],
            "ports": ["4317:4317", "4318:4318"],
            "depends_on": ["clickhouse"],
        },
        "minio": {
            "image": IMAGES["minio"],
            "command": ["server", "/data", "--console-address", ":9001"],
            "environment": {"MINIO_ROOT_USER": _env("MINIO_ROOT_USER"), "MINIO_ROOT_PASSWORD": _env("MINIO_ROOT_PASSWORD")},
            "volumes": ["minio-data:/data"],
            "ports": ["9000:9000", "9001:9001"],
            "healthcheck": {"test": ["CMD", "mc", "ready", "local"], "interval": "10s"},
        },
        "minio-init": {
            "image": IMAGES["minio-init"],
            "entrypoint": ["/bin/sh", "-c"],
            "command": [
                "mc alias set local http://minio:9000 \"$$MINIO_ROOT_USER\" \"$$MINIO_ROOT_PASSWORD\" && "
                f"mc mb --ignore-existing --with-lock local/{catalog.storage.bucket} && "
                f"mc ilm import local/{catalog.storage.bucket} < /etc/vigia/lifecycle.json"],
            "environment": {"MINIO_ROOT_USER": _env("MINIO_ROOT_USER"), "MINIO_ROOT_PASSWORD": _env("MINIO_ROOT_PASSWORD")},
            "volumes": [f"{root}/minio:/etc/vigia:ro"],
            "depends_on": {"minio": {"condition": "service_healthy"}},
        },
        "clickhouse": {
            "image": IMAGES["clickhouse"],
            "environment": {
                "CLICKHOUSE_PASSWORD": _env("CLICKHOUSE_ADMIN_PASSWORD"),
                "CLICKHOUSE_GRAFANA_PASSWORD": _env("CLICKHOUSE_GRAFANA_PASSWORD"),
                "CLICKHOUSE_OTEL_PASSWORD": _env("CLICKHOUSE_OTEL_PASSWORD"),
            },
            "volumes": [f"{root}/clickhouse/schema.sql:/docker-entrypoint-initdb.d/01-schema.sql:ro",
                        f"{root}/clickhouse/users.xml:/etc/clickhouse-server/users.d/vigia.xml:ro",
                        "clickhouse-data:/var/lib/clickhouse"],
            "ports": ["8123:8123"],
            "ulimits": {"nofile": {"soft": 262144, "hard": 262144}},
        },
    }
    for component in catalog.components:
        services[component.name] = dict(
            vigia_base,
            command=["serve", component.name, "--port", str(component.port), "--data-dir", "/spool",
                     "--node", component.name],
            environment={"VIGIA_ADMIN_TOKEN": _env("VIGIA_ADMIN_TOKEN")},
            volumes=["spool:/spool"],
            ports=[f"{component.port}:{component.port}"],
        )
    services["rollup"] = dict(
        vigia_base,
        entrypoint=["/bin/sh", "-c"],
        command=["while true; do vigia rollup --spool /spool "
                 f"--store s3://{catalog.storage.bucket} "
                 "--clickhouse \"http://default:$$CLICKHOUSE_ADMIN_PASSWORD@clickhouse:8123\"; sleep 3600; done"],
        environment=s3 | {"CLICKHOUSE_ADMIN_PASSWORD": _env("CLICKHOUSE_ADMIN_PASSWORD")},
        volumes=["spool:/spool"],
        depends_on={"minio-init": {"condition": "service_completed_successfully"}, "clickhouse": {"condition": "service_started"}},
    )
    volumes = ["prometheus-data", "alertmanager-data", "grafana-data", "minio-data", "clickhouse-data", "spool", "alerts"]
    return {
        "services": services,
        "volumes": {v: {} for v in volumes},
        "secrets": {"smtp_password": {"file": _env("SMTP_PASSWORD_FILE")}},
    }
