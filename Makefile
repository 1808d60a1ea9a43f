# graywave: `make demo` and `make test` work on a fresh machine with python3 (3.11+) and make.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: install check demo test bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Exact versions from uv.lock; --inexact keeps uv itself in the environment. --compile-bytecode
# writes every module's .pyc now: where PYTHONDONTWRITEBYTECODE is set, Python would otherwise
# compile Prefect's thousands of modules again in every command (seconds of each start-up).
# graywave's own modules are installed editable (from these folders), which uv does not compile:
# compileall does (compiling the modules a query loads took 14 ms of its 0.45 s); a module edited
# later is compiled in memory again, as before, until the next install.
# The CPU kernels are compiled into Numba's cache once here (kernels/__main__.py says why): in a
# fresh checkout each process would otherwise compile them again, 13 CPU-seconds each, until one wrote it.
SOURCES := graywave kernels storage service flows api cli
install: $(UV)
	$(UV) sync --frozen --inexact --compile-bytecode --extra test --extra lint --extra gpu-ci
	$(VENV)/bin/python -m compileall -q $(SOURCES)
	$(VENV)/bin/python -m graywave.kernels

# The demo's runs go to a local Prefect server, left running so that its UI shows them (graywave server stop);
# `make demo PREFECT_PORT=4300` when port 4200 is taken. Without a server the demo still runs, on a
# temporary Prefect server whose runs no UI shows: said loudly, on stderr.
PREFECT_PORT ?= 4200
demo: install
	@echo "$(VENV)/bin/graywave server start --port $(PREFECT_PORT)"
	@$(VENV)/bin/graywave server start --port $(PREFECT_PORT) || { \
	  echo "" >&2; \
	  echo "*** WARNING: no local Prefect server on port $(PREFECT_PORT) (see the error above)." >&2; \
	  echo "*** The demo runs on a temporary Prefect server: no UI will show its runs." >&2; \
	  echo "*** Free the port, or choose another: make demo PREFECT_PORT=4300" >&2; \
	  echo "" >&2; }
	$(VENV)/bin/graywave demo

check: install
	scripts/check

# scripts/check, the main run (pytest-xdist, two workers per idle core) and the GPU kernels under
# numba-cuda's simulator, side by side: scripts/test says why, and CONTRIBUTING.md what it measured.
test: install
	scripts/test

bench: install
	$(UV) sync --frozen --inexact --compile-bytecode --extra test --extra lint --extra gpu-ci --extra bench
	$(VENV)/bin/python bench/wave_bench.py
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(VENV)/bin/python bench/similarity_bench.py  # the machine pins an old BLAS kernel otherwise
	$(VENV)/bin/python bench/api_bench.py
	$(VENV)/bin/python bench/api_processing_bench.py
	$(VENV)/bin/python bench/lake_bench.py
	$(VENV)/bin/python bench/dask_bench.py
	$(VENV)/bin/python bench/burst.py
	$(VENV)/bin/python bench/burst.py --only api-writes --deletes-days-ago 3  # deletes outside today's partition
	$(VENV)/bin/python bench/capacity.py
	$(VENV)/bin/python bench/startup_bench.py
	$(VENV)/bin/python bench/daft_bench.py
	$(VENV)/bin/python bench/tokens_bench.py
	$(VENV)/bin/python bench/presign_bench.py

clean:
	rm -rf $(VENV) data bench/out
