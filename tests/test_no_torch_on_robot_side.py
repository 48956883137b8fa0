"""The robot-side deploy path must not need torch: importing it must not import torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

CHECK = """
import importlib, pkgutil, sys
import handrail.robot, handrail.deploy
for package in (handrail.robot, handrail.deploy):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
{extra}
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))[:5]
"""


def _run(extra: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK.format(extra=extra)], capture_output=True, text=True)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed: nothing to leak")
def test_robot_and_deploy_do_not_import_torch():
    result = _run()
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed: nothing to leak")
def test_the_check_catches_a_torch_import():
    result = _run("import torch")
    assert result.returncode != 0 and "AssertionError" in result.stderr
