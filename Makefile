# ChannelDesk: `make run` starts the demo, `make test` runs the whole suite. See README.md.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
PO := $(wildcard app/translations/*/LC_MESSAGES/messages.po)
MO := $(PO:.po=.mo)
# PostgreSQL for the database-bound tests (trust auth on this machine); each run creates its own database.
TEST_POSTGRES_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run install test test-sqlite test-postgres lint translations i18n-update vendor migration clean services

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed translations

translations: $(MO)

%.mo: %.po | $(VENV)/.installed
	$(BIN)/pybabel compile --statistics -i $< -o $@

run: export SIMULATOR_URL ?= http://$(HOST):$(PORT)/sim
run: install
	$(FLASK) db upgrade
	$(FLASK) demo seed
	@echo ""
	@echo "  ChannelDesk demo: http://$(HOST):$(PORT)/"
	@echo "  Sign in as agent / supervisor / admin, password: $${DEMO_PASSWORD:-channeldesk}"
	@echo ""
	$(FLASK) serve --host $(HOST) --port $(PORT)

services:
	@scripts/services.sh start

lint: install
	$(BIN)/ruff check .

test: install services lint test-sqlite test-postgres

test-sqlite: install
	$(BIN)/pytest

test-postgres: install
	@if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		CHANNELDESK_TEST_DB=$(TEST_POSTGRES_URL) $(BIN)/pytest -m db; \
	else \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
		echo "!!! PostgreSQL is not reachable on 127.0.0.1:5432: PostgreSQL tests SKIPPED !!!"; \
		echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"; \
	fi

# Extract strings and merge them into every catalogue (then translate the new entries).
i18n-update: install
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext --no-location --sort-output \
		--project ChannelDesk -o app/translations/messages.pot .
	$(BIN)/pybabel update -i app/translations/messages.pot -d app/translations --width 100 --ignore-obsolete

# New Alembic revision from model changes: make migration m="add something"
migration: install
	$(FLASK) db migrate -m "$(m)"

vendor:
	scripts/vendor.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find app/translations -name '*.mo' -delete
