"""Shared test setup: headless rendering for every test process."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
