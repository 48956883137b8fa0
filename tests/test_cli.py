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
