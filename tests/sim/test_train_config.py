"""PPO settings from ``--set``: a new run takes any, a resumed run only the optimization's."""

from __future__ import annotations

import pytest

from handrail.sim.train_config import (
    RESUMABLE_SETTINGS,
    TrainError,
    hyperparameters_for,
    parse_hyper_overrides,
    resumed_hyperparameters,
)


def test_set_parses_json_values_and_names_a_bad_one() -> None:
    values = parse_hyper_overrides(["ent_coef=0.0", "hidden=[64, 32]", "activation=tanh", "target_kl=null"])
    assert values == {"ent_coef": 0.0, "hidden": (64, 32), "activation": "tanh", "target_kl": None}
    with pytest.raises(TrainError, match="NAME one of"):
        parse_hyper_overrides(["entropy=0.1"])
    with pytest.raises(TrainError, match="not a number"):
        parse_hyper_overrides(["ent_coef=a lot"])


def test_a_resumed_run_keeps_its_settings_and_changes_only_the_optimizations() -> None:
    stored = hyperparameters_for("rotate-z")
    assert resumed_hyperparameters(stored, {}) == stored
    assert resumed_hyperparameters(stored, {"hidden": stored.hidden, "n_envs": stored.n_envs}) == stored
    changed = resumed_hyperparameters(stored, {"ent_coef": 0.0, "learning_rate": 1e-4})
    assert (changed.ent_coef, changed.learning_rate) == (0.0, 1e-4)
    assert changed.hidden == stored.hidden and changed.n_envs == stored.n_envs
    assert "ent_coef" in RESUMABLE_SETTINGS
    with pytest.raises(TrainError, match="--resume --set hidden, n_envs: a resumed run keeps its networks"):
        resumed_hyperparameters(stored, {"hidden": (64,), "n_envs": 8})
