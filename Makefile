# Entry points. The README's two commands are `make demo` and `make test`; `make bench` measures.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Scenarios live in molecule/ at the top of the collection.
export MOLECULE_GLOB := molecule/*/molecule.yml
# Molecule boxes its output to the terminal width; wide enough to show each test by name.
export COLUMNS ?= 160
COLLECTION_LINK := .ansible/collections/ansible_collections/asgi/gunicorn

.PHONY: demo test bench bench-install lint unit sanity molecule molecule-debian12 molecule-debian13 engine image \
	clean-demo setup chromium wrk

# Debian releases the scenarios run on; roles/asgi_app/meta/main.yml lists the same ones.
DEBIAN_RELEASES := 12 13
# Scenarios `make test` leaves out on a release, to keep it under 75 minutes on 2 cores: fleet,
# guardrails, processes, real-apps, two-apps and galaxy exercise the role's own logic (several apps on a host
# among it), third-party apps and the collection's packaging, which do not change with the release
# (Debian 13's Python, systemd, nginx and wheels are exercised by the others). The GitHub workflow runs every scenario on every
# release; `make molecule-debian13 SCENARIO=real-apps` runs one here.
MOLECULE_SKIP_12 :=
MOLECULE_SKIP_13 := fleet galaxy guardrails processes real-apps two-apps

## demo: deploy the example app onto a throwaway systemd container and probe it
demo: setup engine image
	tools/demo.sh

## test: lint, fast tests, ansible-test's sanity tests, then every Molecule scenario
test: setup engine image lint unit sanity molecule

## bench: gunicorn's worker types side by side on a host the role deployed (docs/benchmarks/)
bench: setup engine image wrk
	python tools/benchmark.py $(BENCH_ARGS)

## bench-install: release builds timed by installer (pip, uv, uv with a wheelhouse), on 1 and 2 hosts
bench-install: setup engine image
	python tools/benchmark_install.py $(BENCH_ARGS)

setup: $(VENV)/.installed $(COLLECTION_LINK)

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# The repository is the collection asgi.gunicorn; Ansible finds it through this link.
$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../../.. $@

# Headless Chromium for tests/test_browser.py, wrk for the benchmark: from Debian when missing.
chromium:
	@tools/os-package.sh chromium

wrk:
	@tools/os-package.sh wrk

engine:
	tools/docker-engine.sh

image:
	tools/test-image.sh 12 >/dev/null

# YAML and Ansible, the Python (ruff.toml), and the shell: the scripts here, and the shell inlined
# in the role's and the scenarios' YAML, which tests/test_shell.py checks with the same shellcheck.
lint: setup
	yamllint --strict .
	ansible-lint
	ruff check .
	shellcheck tools/*.sh .ci/run

# The fast tests in three processes (pytest-xdist): most of their time is spent waiting for the
# gunicorn servers they start, so 2 cores run them in half the time; worksteal, because a few of
# them take 5 to 15 s and would otherwise end up queued behind one another.
unit: setup chromium wrk
	pytest -n 3 --dist worksteal tests

# ansible-test's sanity tests (Galaxy runs them on every upload) on the built tarball, installed.
sanity: setup
	python tools/sanity.py

molecule: $(addprefix molecule-debian,$(DEBIAN_RELEASES))

## molecule-debianN: the scenarios (or SCENARIO=name) on a Debian N host, its image built if missing
molecule-debian12 molecule-debian13: molecule-debian%: setup engine
	image=$$(tools/test-image.sh $* | tail -n 1); \
	ASGI_APP_DEBIAN=$* ASGI_APP_TEST_IMAGE=$$image molecule test \
	  $(if $(SCENARIO),--scenario-name $(SCENARIO),--all $(addprefix --exclude ,$(MOLECULE_SKIP_$*)))
	@echo "molecule-debian$*: the scenarios above passed on Debian $* ($$(tools/test-image.sh $* | tail -n 1))"

clean-demo:
	docker rm -f asgi-app-demo >/dev/null 2>&1 || true
