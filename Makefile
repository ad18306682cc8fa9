# redisched — developer tasks. Needs only make and Python >= 3.11 (PYTHON=... to pick one).
#
#   make test                                          every test (unit, integration, ...)
#   make utest | make itest                            unit / integration tests
#   make file=test_queue.py utest                      one file (a basename under tests/unit)
#   make file=test_queue.py function='test_pop' utest  tests matching a pytest -k expression
#   make run                                           redisched serve (embedded servers when
#                                                      no REDISCHED_REDIS_URL/SCHEDULER_DB_URI);
#                                                      installs the service only, no test extras
#   make revid=0002 m="add x" migrations               new redisched/history/migrations/0002_add_x.sql
#   make bench | make lint
#
# Integration tests need Redis, Postgres and RabbitMQ on 127.0.0.1 (.ci/run starts them).

PYTHON ?= python3
VENV   ?= .venv
PYTEST_ARGS ?=
MIGRATIONS = redisched/history/migrations

.PHONY: help install run test utest itest bench migrations lint

help:
	@sed -n '1,13s/^# \{0,1\}//p' Makefile

# Each stamp is newer than pyproject.toml once the install for it has succeeded: the service
# alone (make run), or with the test extras (make install, the tests).
$(VENV)/.installed-service: pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed: pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed-service
	$(VENV)/bin/redisched serve

# $(pytest_in): pytest over $$dir; file= narrows to that basename under $$dir, function= to
# a -k expression. Exit status 5 (no tests collected) fails the target, said out loud.
pytest_in = target=$$dir; \
	if [ -n '$(file)' ]; then \
		target=$$(find $$dir -name '$(file)' -type f | sort); \
		[ -n "$$target" ] || { echo "no file named '$(file)' under $$dir" >&2; exit 2; }; \
	fi; \
	set -- $(VENV)/bin/python -m pytest -q $$target $(PYTEST_ARGS); \
	if [ -n '$(function)' ]; then set -- "$$@" -k '$(function)'; fi; \
	echo "$$*"; rc=0; "$$@" || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "FAILED: no tests collected in $$target" >&2; fi; \
	exit $$rc

test: install
	@dir=tests; $(pytest_in)

utest: install
	@dir=tests/unit; $(pytest_in)

itest: install
	@dir=tests/integration; $(pytest_in)

bench: install
	$(VENV)/bin/python -m benchmarks

# revid defaults to the next free number; m is the description.
migrations:
	@set -e; \
	[ -n "$(m)" ] || { echo 'usage: make [revid=0002] m="add x" migrations' >&2; exit 2; }; \
	revid='$(revid)'; \
	if [ -z "$$revid" ]; then \
		last=$$(ls $(MIGRATIONS) 2>/dev/null | sed -n 's/^\([0-9][0-9]*\)_.*\.sql$$/\1/p' | sort -n | tail -1); \
		revid=$$(printf '%04d' $$(( $${last:-0} + 1 ))); \
	fi; \
	case "$$revid" in *[!0-9]*|'') echo "revid must be digits, got '$$revid'" >&2; exit 2;; esac; \
	if ls $(MIGRATIONS)/$${revid}_*.sql >/dev/null 2>&1; then \
		echo "revision $$revid exists: $$(ls $(MIGRATIONS)/$${revid}_*.sql)" >&2; exit 2; fi; \
	slug=$$(printf '%s' '$(m)' | tr 'A-Z' 'a-z' | tr -c 'a-z0-9' '_' | sed 's/__*/_/g; s/^_//; s/_$$//'); \
	path=$(MIGRATIONS)/$${revid}_$$slug.sql; \
	mkdir -p $(MIGRATIONS); \
	{ \
	printf -- '-- %s: %s\n' "$${revid}_$$slug" '$(m)'; \
	printf -- '--\n'; \
	printf -- '-- Created %s with `make migrations`. `redisched migrate` applies the files of\n' "$$(date -u +%Y-%m-%d)"; \
	printf -- '-- this folder in name order, each once, in one transaction with its schema_migrations\n'; \
	printf -- '-- row (so no CREATE INDEX CONCURRENTLY, VACUUM, ...). Never edit a released migration:\n'; \
	printf -- '-- add a new one. Every query the API serves needs an index.\n\n'; \
	} > "$$path"; \
	echo "created $$path"

# Syntax check always; ruff too when it is installed (it is not a dependency).
lint: install
	$(VENV)/bin/python -m compileall -q redisched tests benchmarks
	@if command -v ruff >/dev/null 2>&1; then ruff check redisched tests benchmarks; \
	elif [ -x $(VENV)/bin/ruff ]; then $(VENV)/bin/ruff check redisched tests benchmarks; \
	else echo "ruff not installed: syntax check only"; fi
