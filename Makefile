# Two commands: `make test` and `make demo`. Both create .venv and install the pinned requirements if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.PHONY: install browser test demo lint clean

# Idle OpenMP threads sleep instead of spinning: on a small shared CPU, spinning threads of one process (or of the
# test's worker processes) starve the others, making CPU training several times slower.
export OMP_WAIT_POLICY ?= PASSIVE

$(STAMP): requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e . --no-deps
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP) browser

# The editor's browser test drives Debian's Chromium (tests/test_app.py); installed here when missing, as root.
browser:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || \
		if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); \
		else echo "note: the editor's browser test needs Chromium: sudo apt-get install -y chromium"; fi

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest

demo: install
	$(PY) scripts/demo.py

clean:
	rm -rf runs
