# Two commands on a fresh machine:  make demo  (install + nightly job on the sample)  and  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install browser bench clean

# setuptools>=77 in the venv itself: tests/test_packaging.py builds the wheel offline
# (--no-build-isolation), and the SPDX license string needs it (3.11's venv has 65.5)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=77"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/belegwacht run sample_data/demo --entity Musterstadt --data-dir var
	@echo
	@echo "Next: $(BIN)/belegwacht users add auditor --role auditor && $(BIN)/belegwacht app"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

# Debian's Chromium for the real-browser test (CI installs it; see .ci/run)
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

bench: $(STAMP)
	$(BIN)/python -m bench --lines 1000000 --repeat 3

clean:
	rm -rf var .pytest_cache
