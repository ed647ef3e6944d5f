# The two commands a new user needs (see README.md):
#   make demo   install everything, start the embedded stack, run the main job
#   make test   run the test suite (starts its own SeaweedFS and MLflow on free ports)
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install data-packages browser demo test up down status bench local-bases prod-smoke

install: $(VENV)/.installed data-packages browser

# Photos and fonts of the generator's photo styles (Debian packages; without apt it says what is missing).
data-packages:
	@sh scripts/install-data-packages.sh

# Debian's chromium for the review page's browser tests (without apt it says what is missing).
browser:
	@sh scripts/install-browser.sh

# Re-installs when the dependency set changes; the constraints pin the whole tested set.
$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[platform,test]'
	touch $@

demo: install
	$(BIN)/clearmark demo

test: install
	$(BIN)/python -m pytest

up: install
	$(BIN)/clearmark stack up

down:
	$(BIN)/clearmark stack down

status:
	$(BIN)/clearmark stack status

bench: install
	$(BIN)/clearmark bench

# Stand-ins for the official base images on a Docker host without an image registry (root: debootstrap).
local-bases:
	sh docker/local-bases/build.sh

# The production proof on this host's Docker engine: builds every image, runs the platform
# (ETL -> training in the trainer image -> inbox -> outbox + drift report), then `down -v`.
# LOCAL_BASES=1 builds the stand-in bases first; SCALE_OUT=1 adds two Celery workers and two
# archives at once, FAULTS=1 the fault injection. Compose: the plugin, else .venv's docker-compose.
prod-smoke:
	PATH="$(CURDIR)/$(BIN):$$PATH" python3 src/clearmark/deploy/smoke.py $(if $(LOCAL_BASES),--local-bases) $(if $(SCALE_OUT),--scale-out) $(if $(FAULTS),--faults)
