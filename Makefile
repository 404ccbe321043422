# vigia: `make run` renders, checks, starts the embedded stack and proves it; `make test` runs the tests.
VENV   := .venv
VIGIA  := $(VENV)/bin/vigia
PY     := $(VENV)/bin/python
PROFILE ?= local
OUT    ?= build/$(PROFILE)

.PHONY: setup render render-golden check test run stop up deploy down bench clean

setup:
	@bash scripts/setup.sh

render: setup
	$(VIGIA) render --profile $(PROFILE) --out $(OUT)

# Refresh the committed prod render (infra/observability) and the root docker-compose.yml / .env.example.
render-golden: setup
	VIGIA_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/test_golden.py

check: render
	$(VIGIA) check --out $(OUT)

test: setup
	$(PY) -m pytest -q

DATA ?= var/stack

run: setup
	$(VIGIA) render --profile local --out build/local
	$(VIGIA) check --out build/local
	$(VIGIA) up --fresh --data $(DATA)
	$(VIGIA) prove --data $(DATA) --duration 60 --report reports/latest
	@echo ""
	@echo "report: reports/latest/report.md (plots: reports/latest/*.png)"
	@echo "UIs:    Prometheus http://127.0.0.1:9090  Alertmanager http://127.0.0.1:9093  gateway http://127.0.0.1:8081/_health"
	@echo "stop:   make stop"

stop: setup
	$(VIGIA) down --data $(DATA)

# Starts the committed prod render; refuses placeholder secrets and a render that drifted from the catalog.
up deploy: setup
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make up: needs a running Docker engine; without one use 'make run' (embedded stack)"; exit 1; }
	@test -f .env || { echo "make up: copy .env.example to .env and set the secrets first"; exit 1; }
	@bad=$$(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=generate-me$$/\1/p' .env | paste -sd, - | sed 's/,/, /g'); \
	  test -z "$$bad" || { echo "make up: .env still says generate-me for $$bad; set real secrets first"; exit 1; }
	@$(PY) -m pytest -q -p no:cacheprovider tests/test_golden.py >/dev/null 2>&1 || { echo "make up: infra/observability or docker-compose.yml differs from a fresh render of stack.yaml; run 'make render-golden' and review the diff"; exit 1; }
	docker compose up -d --build

down:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker compose down || true

bench: setup
	$(VIGIA) bench overhead
	$(VIGIA) bench logger
	$(VIGIA) bench trails
	$(VIGIA) bench rollup

clean:
	rm -rf build
