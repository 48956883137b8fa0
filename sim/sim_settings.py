"""How a simulator steps: the control rate the policy runs at, the physics timestep and the solver.

Training does not need the virtual hand's fine physics (the virtual hand, like the real one, is the
reality that randomization must cover), so :data:`TRAINING_SIM` steps coarser: 20 Hz control on 10 ms
physics with Euler integration and a short solver budget, as MuJoCo Playground's LEAP rotate-z does
(``ctrl_dt`` 0.05, ``sim_dt`` 0.01), but with the solver budget the scene's contacts need. The choice was
measured (README, "Training recipe"): stable across every randomization range, ~5x the simulated seconds
per CPU second of the MJCF's 2 ms implicit-fast setting; ``handrail eval --sim fine`` checks that a policy
trained coarse keeps its score in the fine simulation.

A policy records its settings (:meth:`SimSettings.to_dict`) in its checkpoint and policy file, so
``handrail eval`` rebuilds the simulator it was trained in and the deploy loop runs it at its own rate.
``None`` settings (older policies) mean: the profile's control rate on the MJCF's own physics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import mujoco

from handrail.errors import HandrailError

INTEGRATORS = {
    "euler": mujoco.mjtIntegrator.mjINT_EULER,
    "implicitfast": mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
    "implicit": mujoco.mjtIntegrator.mjINT_IMPLICIT,
    "rk4": mujoco.mjtIntegrator.mjINT_RK4,
}


class SimSettingsError(HandrailError):
    """Simulator settings that cannot be used (a rate or timestep out of range, an unknown integrator)."""


@dataclass(frozen=True)
class SimSettings:
    """Control rate [Hz], physics timestep [s] (shortened so whole substeps fill one period), integrator, solver.

    ``solver_iterations``/``line_search_iterations`` of 0 keep the MJCF's values.
    """

    control_rate_hz: float = 20.0
    timestep_s: float = 0.01
    integrator: str = "euler"
    # The solver's budget. Playground's 5 (line search 8) is unstable with the scene's impratio 10 at 10 ms: a
    # finger flicking the cube made it spin at 600 rad/s and leave the hand within a second; 20 still reached
    # 19 rad/s. At 50 the Newton solver converges (it stops early once it has), at the same cost per step as
    # 5 with impratio 1, whose slippery contacts let a held cube turn 5x more than the fine physics (measured,
    # README "Training recipe").
    solver_iterations: int = 50
    line_search_iterations: int = 50
    # Frictional-to-normal impedance ratio of elliptic cones (0: keep the MJCF's, the scene's 10).
    impratio: float = 0.0

    def __post_init__(self) -> None:
        for name in ("control_rate_hz", "timestep_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise SimSettingsError(f"simulator setting {name} = {value!r} must be a positive number")
        if self.control_rate_hz > 1000:
            raise SimSettingsError(f"control_rate_hz = {self.control_rate_hz} is above 1000 Hz — give the loop rate")
        if self.timestep_s > self.control_period_s:
            raise SimSettingsError(
                f"timestep_s = {self.timestep_s} is longer than one control period ({self.control_period_s:.4f} s) "
                "— use a shorter physics timestep"
            )
        if isinstance(self.impratio, bool) or not isinstance(self.impratio, int | float) or not self.impratio >= 0:
            raise SimSettingsError(f"simulator setting impratio = {self.impratio!r} must be a number >= 0")
        if self.integrator not in INTEGRATORS:
            raise SimSettingsError(f"integrator {self.integrator!r}: valid {', '.join(INTEGRATORS)}")
        for name in ("solver_iterations", "line_search_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SimSettingsError(f"simulator setting {name} = {value!r} must be a whole number >= 0")

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def substeps(self) -> int:
        """Physics steps per control period."""
        return max(1, round(self.control_period_s / self.timestep_s))

    def apply(self, model: mujoco.MjModel) -> None:
        """Write timestep (period / substeps, exactly), integrator and solver budget into ``model``."""
        model.opt.timestep = self.control_period_s / self.substeps
        model.opt.integrator = INTEGRATORS[self.integrator]
        if self.solver_iterations:
            model.opt.iterations = self.solver_iterations
        if self.line_search_iterations:
            model.opt.ls_iterations = self.line_search_iterations
        if self.impratio:
            model.opt.impratio = self.impratio

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "substeps": self.substeps}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimSettings:
        """Settings as :meth:`to_dict` wrote them; raises SimSettingsError naming unknown or bad entries."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key != "substeps"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise SimSettingsError(
                f"unknown simulator setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def of_model(cls, model: mujoco.MjModel, control_rate_hz: float) -> SimSettings:
        """The MJCF's own physics (its timestep, integrator and solver budget) at ``control_rate_hz``."""
        names = {int(value): name for name, value in INTEGRATORS.items()}
        integrator = names.get(int(model.opt.integrator))
        if integrator is None:
            raise SimSettingsError(
                f"the model's integrator {int(model.opt.integrator)} is not one of {', '.join(INTEGRATORS)}"
            )
        return cls(
            control_rate_hz=float(control_rate_hz),
            timestep_s=float(model.opt.timestep),
            integrator=integrator,
            solver_iterations=int(model.opt.iterations),
            line_search_iterations=int(model.opt.ls_iterations),
            impratio=float(model.opt.impratio),
        )

    def with_values(self, overrides: dict[str, str]) -> SimSettings:
        """These settings with ``NAME=VALUE`` strings applied (``--sim-set``), converted to each field's type."""
        values = asdict(self)
        for name, text in overrides.items():
            if name not in values:
                raise SimSettingsError(f"--sim-set {name}: valid names {', '.join(sorted(values))}")
            kind = type(values[name])
            try:
                values[name] = kind(text)
            except ValueError as error:
                raise SimSettingsError(f"--sim-set {name}={text}: not a {kind.__name__}") from error
        return SimSettings(**values)


# Training: Playground's rotate-z timing (see the module docstring).
TRAINING_SIM = SimSettings()
