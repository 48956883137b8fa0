"""The package installs under one import root, in regular and editable mode, with one console script."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("robot", "sim", "vision", "deploy", "calibration")

PROBE = """
import importlib.util, json, sys
import handrail, handrail.robot, handrail.sim, handrail.vision, handrail.deploy, handrail.calibration
from handrail.robot.profile import load_profile
from handrail.deploy.demo import bundled_policy_path
from handrail.vision.pose_model_file import bundled_pose_model_path
profile = load_profile()
print(json.dumps({
    "handrail": handrail.__file__,
    "robot": handrail.robot.__file__,
    "sim": handrail.sim.__file__,
    "mjcf": str(profile.mjcf),
    "bundled_models": [str(bundled_policy_path()), str(bundled_pose_model_path())],
    "generic_top_level": [name for name in ("robot", "sim", "vision", "deploy", "calibration")
                          if importlib.util.find_spec(name) is not None],
}))
"""


def _install(tmp_path: Path, editable: bool) -> Path:
    """Install handrail (no deps) into a fresh venv that borrows this venv's dependencies."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # A plain path line: makes our dependencies importable without running this venv's .pth hooks,
    # so the editable handrail of the test environment does not leak into the probe.
    (site_packages / "_handrail_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    command += ["--no-build-isolation", "-e", str(REPO_ROOT)] if editable else ["--no-build-isolation", str(REPO_ROOT)]
    subprocess.run(command, check=True, cwd=tmp_path, env={**os.environ, "PIP_NO_INPUT": "1"})
    return venv


def _probe(venv: Path, tmp_path: Path) -> dict:
    import json

    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE], check=True, capture_output=True, text=True, cwd=tmp_path
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_install_modes_import_under_one_root(tmp_path, editable):
    venv = _install(tmp_path, editable)
    found = _probe(venv, tmp_path)
    assert found["generic_top_level"] == [], "generic top-level modules leaked into site-packages"
    if editable:
        assert Path(found["robot"]) == REPO_ROOT / "robot" / "__init__.py"
        assert Path(found["sim"]) == REPO_ROOT / "sim" / "__init__.py"
    else:
        assert str(venv) in found["handrail"] and str(venv) in found["robot"]
        assert Path(found["robot"]).parent.name == "robot" and Path(found["robot"]).parent.parent.name == "handrail"
        # package data travels with a regular install: profile and MJCF resolve inside site-packages
        assert str(venv) in found["mjcf"] and Path(found["mjcf"]).is_file()
        # ... and so do the trained artifacts the demo runs: the policy and the pose model
        for path in found["bundled_models"]:
            assert str(venv) in path and Path(path).is_file(), path
    help_text = subprocess.run(
        [str(venv / "bin" / "handrail"), "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "profile" in help_text and "model" in help_text
