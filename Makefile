# signoff entry points; `make test` and `make run` install what they need into .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmarks' extras (cedarpy, matplotlib): `make bench`, and the test command, which runs
# every benchmark in quick mode.
BENCH_STAMP := $(VENV)/.installed-bench
PROTOS := $(wildcard proto/signoff/v1/*.proto)
GEN_OUT := clients/python
PROTOC := $(BIN)/python -m grpc_tools.protoc -I proto \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc

.PHONY: install run test check gen gen-check lint typecheck bench bench-quick bench-decision clean inbox-deps screenshots

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo: gRPC on 127.0.0.1:50051, HTTP (AuthZEN, the web inbox with its development login)
# on 127.0.0.1:8080; both on loopback, so the development login is allowed.
run: $(STAMP)
	$(BIN)/signoff serve --rules rules --dev-login on

test: $(BENCH_STAMP) inbox-deps
	$(BIN)/python -m pytest

# The web inbox tests: Debian's Chromium (never a browser download) and the test OpenID
# provider from its package-lock. The tests install either if missing; CI installs them first.
OIDC_PROVIDER := tests/http/oidc-provider
inbox-deps:
	test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)
	test -d $(OIDC_PROVIDER)/node_modules || (cd $(OIDC_PROVIDER) && npm ci --no-audit --no-fund)

# Refresh the inbox screenshots in docs/img from the browser test.
screenshots: $(STAMP) inbox-deps
	SIGNOFF_SCREENSHOTS=docs/img $(BIN)/python -m pytest tests/http/test_http_inbox_browser.py -q

gen: $(STAMP)
	$(PROTOC) \
		--python_out=$(GEN_OUT) --grpc_python_out=$(GEN_OUT) \
		--mypy_out=$(GEN_OUT) --mypy_grpc_out=$(GEN_OUT) $(PROTOS)

# Regenerates into a scratch tree and fails if the committed code differs.
gen-check: $(STAMP)
	rm -rf .gen-check && mkdir -p .gen-check
	$(PROTOC) \
		--python_out=.gen-check --grpc_python_out=.gen-check \
		--mypy_out=.gen-check --mypy_grpc_out=.gen-check $(PROTOS)
	diff -r .gen-check/signoff/v1 $(GEN_OUT)/signoff/v1 --exclude=__pycache__ --exclude=__init__.py --exclude=py.typed
	rm -rf .gen-check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# bench/ is typechecked too, so its libraries must be there.
typecheck: $(BENCH_STAMP)
	$(BIN)/mypy

check: lint typecheck gen-check

# Every performance target, measured side by side with Cerbos and cedarpy (several minutes);
# not part of the test command. Writes bench/results/ and docs/performance.{md,png}.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run

# Every benchmark of `make bench` at tiny sizes (seconds): checks that each runs and answers
# right, not speed. Writes into a temporary directory, never into the repository.
bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench.run --quick --no-doc

bench-decision: $(STAMP)
	$(BIN)/python -m bench.decision

clean:
	rm -rf $(VENV) .gen-check .pytest_cache .mypy_cache .ruff_cache
