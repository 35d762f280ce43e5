# cadenza: the two commands are `make demo` and `make test`; both build .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean system-deps venv

venv: $(STAMP)

# Debian's FluidSynth and General MIDI soundfont render scores to audio; without them cadenza
# falls back to a small built-in synthesiser and says so. tcmalloc keeps the memory PyTorch
# frees at every CPU training step for reuse (glibc hands big blocks back to the kernel and
# page-faults them in again); `cadenza train` runs under it when it is installed.
system-deps:
	@if command -v fluidsynth >/dev/null 2>&1 && ls /usr/share/sounds/sf2/*.sf2 >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
		echo "Installing fluidsynth and fluid-soundfont-gm (Debian packages)..."; \
		( apt-get install -y -q fluidsynth fluid-soundfont-gm >/dev/null 2>&1 || \
		  ( apt-get update -q >/dev/null 2>&1 && apt-get install -y -q fluidsynth fluid-soundfont-gm >/dev/null 2>&1 ) ) || \
		echo "WARNING: could not install fluidsynth; cadenza will render with its built-in synthesiser."; \
	else \
		echo "WARNING: fluidsynth or a GM soundfont is missing and cannot be installed here (need root and apt-get);"; \
		echo "         cadenza will render scores with its built-in synthesiser. Install 'fluidsynth fluid-soundfont-gm' for real instruments."; \
	fi

	@if ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
		echo "Installing libtcmalloc-minimal4 (Debian package)..."; \
		( apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || \
		  ( apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 ) ) || \
		echo "WARNING: could not install libtcmalloc-minimal4; CPU training will use the system allocator (slower)."; \
	else \
		echo "NOTE: libtcmalloc-minimal4 is not installed; CPU training uses the system allocator (slower)."; \
	fi

	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
		echo "Installing chromium (Debian package) for the browser test of the evaluation report..."; \
		( apt-get install -y -q chromium >/dev/null 2>&1 || \
		  ( apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1 ) ) || \
		echo "WARNING: could not install chromium; the browser test of the evaluation report will be skipped."; \
	else \
		echo "NOTE: chromium is not installed; the browser test of the evaluation report will be skipped."; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cadenza demo --out demo

test: $(STAMP)
	$(VENV)/bin/ruff check cadenza tests benchmarks conftest.py
	$(VENV)/bin/ruff format --check cadenza tests benchmarks conftest.py
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check cadenza tests benchmarks conftest.py
	$(VENV)/bin/ruff format --check cadenza tests benchmarks conftest.py

bench: $(STAMP)
	for b in benchmarks/[!_]*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo .pytest_cache
