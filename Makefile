# The course's entry points. Each target creates the local environment first if it is missing
# or older than pyproject.toml.  make course | make test | make lab | make rehearse | make gpu-check
# | make mutation
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup course test rehearse gpu-check lab mutation clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo ">> creating $(VENV) (first time: a few minutes; TensorFlow and torch are large)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[all,dev]"
	@# triton (pulled in by torch) only helps on a CUDA GPU, and with it importing TensorFlow
	@# before torchvision segfaults: remove it where there is no NVIDIA GPU.
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(BIN)/python -m pip uninstall -y -q triton >/dev/null 2>&1 || true; \
		echo ">> no NVIDIA GPU: removed triton (see README, Troubleshooting)"; fi
	@# Colab ships ipywidgets 7.7.1: keep a copy beside the 8.x install so the tests can run the
	@# widget panels against both (tests/test_widgets_compat.py).
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --upgrade \
		--target $(VENV)/compat/ipywidgets7 "ipywidgets==7.7.1" "widgetsnbextension==3.6.10" "ipython_genutils==0.2.0"
	@touch $(STAMP)

course: setup
	$(BIN)/python scripts/run_course.py

test: setup
	COURSE_MODE=smoke $(BIN)/python -m pytest

# Full mode on this CPU with every training/query loop capped (COURSE_REHEARSAL=1): each notebook's peak
# resident memory (fails over 10 GB), the work full mode does and a T4 estimate -> build/rehearsal.csv
rehearse: setup
	$(BIN)/python scripts/run_course.py --rehearse --no-html

# Full mode on a CUDA GPU, measured (wall time, peak GPU memory -> build/summary.csv); exits 1 without a GPU
gpu-check: setup
	$(BIN)/python scripts/gpu_check.py

# Mutation testing of the core numeric and state code with its unit tests (mutmut; scripts/mutation.py):
# prints the score, writes build/mutation.csv and build/mutation.md, fails under 90 % of mutants killed
mutation: setup
	$(BIN)/python scripts/mutation.py

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build .pytest_cache mutants
