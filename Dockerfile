# The vigia image: reference services, alert sink and rollup job (`docker compose` builds it).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md stack.yaml ./
COPY vigia ./vigia
COPY infra ./infra
COPY collectors ./collectors
COPY dashboards ./dashboards
COPY jobs ./jobs
COPY loadtests ./loadtests
COPY services ./services
RUN pip install --no-cache-dir . && useradd --uid 10001 --create-home vigia && mkdir -p /spool /data && chown vigia /spool /data
USER vigia
ENTRYPOINT ["vigia"]
