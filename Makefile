# One-command entry points. Each creates ./.venv on first use (CPU torch, no CUDA download).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
# torch is installed first and pinned so that pip takes the small CPU wheel. Elsewhere,
# e.g.: make run TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH         ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# the suite runs on two processes (pytest-xdist), a pipeline's tests on one (tests/conftest.py)
TEST_WORKERS  ?= 2

.PHONY: install install-test run test bench clean

# `make run` needs only the package; `make test` adds the test extra (pytest, Ray, the peers)
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"  # test = pytest + the ray and peers extras
	$(PY) -m pip install --quiet --no-deps torcheck==1.0.1  # peer tool; its metadata pins torch<2.0, it runs on 2.x
	$(PY) -m pip install --quiet --no-deps fastai==2.8.12 fastcore==2.2.39 fasttransform==0.0.5 fastprogress==1.0.3 \
	    fastdownload==0.0.8 plum-dispatch==2.9.0 beartype==0.23.1  # lr_find peer: fastai without torchvision/spaCy
	$(PY) -m pip install --quiet rich  # plum-dispatch's one dependency with dependencies of its own
	$(PY) -m pip install --quiet --no-deps torchtest==0.5  # torchtest peer: one module of torch calls, old metadata
	$(PY) -m pip install --quiet --no-deps cockpit-for-pytorch==1.0.2 backpack-for-pytorch==1.7.1 einops==0.8.2 \
	    unfoldNd==0.2.3 json-tricks==3.17.3 seaborn==0.13.2  # cockpit peer: backpack's metadata pulls torchvision
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: $(VENV)/.installed  ## install, then run the default detection matrix into reports/
	$(VENV)/bin/recipebench run $(ARGS)

test: $(VENV)/.installed-test  ## install, then run the test suite (exit 5 = no tests collected is not a failure)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) .recipebench_cache
