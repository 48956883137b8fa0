"""The console script: `handrail --help` lists the subcommands and every subcommand has --help."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from handrail.cli import build_parser, main

HANDRAIL = Path(sys.executable).parent / "handrail"


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths.append((*prefix, name))
                paths.extend(_subcommand_paths(child, (*prefix, name)))
    return paths


def test_help_lists_subcommands():
    result = subprocess.run([str(HANDRAIL), "--help"], capture_output=True, text=True, check=True)
    top_level = {path[0] for path in _subcommand_paths(build_parser())}
    assert {"profile", "model"} <= top_level
    for name in top_level:
        assert name in result.stdout


def test_every_subcommand_has_help(capsys):
    paths = _subcommand_paths(build_parser())
    assert len(paths) >= 4
    for path in paths:
        try:
            main([*path, "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0, path
        assert "usage: handrail " + " ".join(path) in capsys.readouterr().out


def test_profile_show_prints_the_table():
    result = subprocess.run([str(HANDRAIL), "profile", "show"], capture_output=True, text=True, check=True)
    assert "leap_right" in result.stdout and "thumb_ip" in result.stdout and "fingerprint" in result.stdout


def test_bad_profile_is_a_clear_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    result = subprocess.run([str(HANDRAIL), "profile", "show", "--profile", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr and "Traceback" not in result.stderr


def _without(monkeypatch, *modules: str) -> None:
    """Pretend ``modules`` are not installed, as in a regular install without extras."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in modules else real_find_spec(name, *a)
    )


def test_a_command_whose_extra_is_missing_is_refused_at_once_naming_the_pip_command(monkeypatch, tmp_path, capsys):
    _without(monkeypatch, "torch", "stable_baselines3")
    out = tmp_path / "run"
    assert main(["train", "--task", "pose", "--minutes", "0.01", "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert "`handrail train` needs torch, stable_baselines3, from the 'train' extra" in message
    assert "pip install 'handrail[train]'" in message
    assert not out.exists()  # refused before anything ran
    _without(monkeypatch, "scipy")
    assert main(["calibrate", "extrinsics", "--hand-eye", "--virtual", "--out", str(tmp_path / "x.toml")]) == 2
    assert "pip install 'handrail[calibrate]'" in capsys.readouterr().err


def test_the_demo_deploy_and_check_need_no_extra(monkeypatch):
    from handrail.cli import require_extra

    _without(monkeypatch, "torch", "onnx", "gymnasium", "stable_baselines3", "tensorboard", "scipy")
    for command in (("demo",), ("deploy",), ("check",), ("emulate",), ("compare",), ("calibrate", "joints")):
        require_extra(command, ["--seconds", "1"])
    require_extra(("calibrate", "extrinsics"), ["--images", "dir"])  # only --hand-eye needs scipy


def test_an_extras_module_missing_deep_inside_a_command_gets_the_same_hint(monkeypatch, capsys):
    import handrail.cli as cli

    def handler(args):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli, "_cmd_profile_show", handler)  # build_parser() looks it up when main() runs
    assert main(["profile", "show"]) == 2
    assert "`handrail profile show` needs torch, from the 'train' extra: pip install 'handrail[train]'" in (
        capsys.readouterr().err
    )
