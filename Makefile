# The two README commands. Each sets up its virtual environment (and missing system libraries when run as
# root) itself. `make demo VENV=DIR DEMO_SECONDS=N`: another environment, a shorter run (CI uses both).
.PHONY: demo test bench

VENV ?= .venv
DEMO_SECONDS ?= 20

demo:
	HANDRAIL_VENV="$(VENV)" DEMO_SECONDS="$(DEMO_SECONDS)" bash scripts/bootstrap.sh demo

test:
	HANDRAIL_VENV="$(VENV)" bash scripts/bootstrap.sh test

bench:
	MUJOCO_GL=egl $(VENV)/bin/python benchmarks/physics.py
