# qa-lirpa: `make demo` and `make test` set everything up on a fresh machine.
#
# The venv (torch with CUDA is ~5.5 GB) is created once per dependency set in a cache folder keyed by
# a hash of requirements/*.txt, and .venv is a symlink to it, so repeated clones and CI runs reuse it.
# qa-lirpa itself is not installed into that shared venv (an editable install would point every
# clone at whichever clone installed last): each checkout runs its own code through
# PYTHONPATH=$(CURDIR), and bin/qa-lirpa is its command.
PYTHON ?= python3
REQ_FILES := requirements/runtime.txt requirements/test.txt requirements/extras.txt requirements/nodeps.txt
REQ_HASH := $(shell cat $(REQ_FILES) | sha256sum | cut -c1-12)
CACHE_DIR ?= $(HOME)/.cache/qa-lirpa
VENV_DIR := $(CACHE_DIR)/venv-$(REQ_HASH)
VPY := .venv/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: all venv install demo test clean-venv

all: test

# The stamp is written last, so an interrupted install is redone from scratch next time.
$(VENV_DIR)/.complete:
	mkdir -p $(CACHE_DIR)
	rm -rf $(VENV_DIR)
	$(PYTHON) -m venv $(VENV_DIR)
	$(VENV_DIR)/bin/python -m pip install -q -r requirements/runtime.txt -r requirements/test.txt -r requirements/extras.txt
	$(VENV_DIR)/bin/python -m pip install -q --no-deps -r requirements/nodeps.txt
	touch $@

venv: $(VENV_DIR)/.complete
	@if [ "$$(readlink .venv)" != "$(VENV_DIR)" ]; then rm -rf .venv; ln -s $(VENV_DIR) .venv; fi

# kept for install_tool.sh and habits: the venv is all there is to install
install: venv

RUN_HERE := PYTHONPATH=$(CURDIR) PATH=$(CURDIR)/bin:$$PATH

demo: install
	$(RUN_HERE) $(VPY) -m qa_lirpa demo $(DEMO_ARGS)

test: install
	$(RUN_HERE) $(VPY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf .venv
