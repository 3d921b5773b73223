# The two commands of the README:  make demo  and  make test.
# Both install what they need into .venv first (once; again when the install files change).
#
# On a machine without a GPU, torch comes from constraints/cpu.txt (a CPU build). On a GPU
# cluster install with plain pip instead:  pip install -e .  (gets the normal CUDA torch).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints/cpu.txt constraints/offline.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints/cpu.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps -r constraints/offline.txt
	touch $(STAMP)

demo: install
	$(PY) -m seedgrid run --config demo --wi 1 --do 1 --out runs/demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
