# The two README commands. Each sets up .venv (and missing system libraries when run as root) itself.
.PHONY: demo test bench

demo:
	bash scripts/bootstrap.sh demo

test:
	bash scripts/bootstrap.sh test

bench:
	MUJOCO_GL=egl .venv/bin/python benchmarks/physics.py
