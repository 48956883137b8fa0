"""Single-thread physics throughput of the scene: ``mj_step`` calls per second and the realtime factor.

    python benchmarks/physics.py --seconds 5

The hand holds its home pose (our LEAP-class hand, profile home angles) with the cube resting on the palm,
which is the contact load of a policy rollout at rest.
"""

import argparse
import time
import tomllib
from pathlib import Path

import mujoco

from handrail.sim import leap
from handrail.sim.model import build_scene

PROFILE_TOML = Path(__file__).resolve().parents[1] / "robot" / "profiles" / "leap.toml"


def measure_steps_per_s(model: mujoco.MjModel, seconds: float) -> tuple[float, int]:
    """Step from the home keyframe for ``seconds`` of wall time; return (steps/s, mean contacts)."""
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key(leap.HOME_KEYFRAME_NAME).id)
    for _ in range(500):  # warm-up, and the cube settles
        mujoco.mj_step(model, data)
    steps = 0
    contacts = 0
    start_s = time.perf_counter()
    while time.perf_counter() - start_s < seconds:
        for _ in range(1000):
            mujoco.mj_step(model, data)
        steps += 1000
        contacts += data.ncon
    elapsed_s = time.perf_counter() - start_s
    return steps / elapsed_s, round(contacts * 1000 / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="wall time to measure for [s]")
    args = parser.parse_args()

    profile = tomllib.loads(PROFILE_TOML.read_text())
    home_rad = {joint["mjcf_joint"]: joint["home_rad"] for joint in profile["joints"]}
    model = build_scene((PROFILE_TOML.parent / profile["mjcf"]).resolve(), home_rad)
    steps_per_s, contacts = measure_steps_per_s(model, args.seconds)
    timestep_ms = model.opt.timestep * 1e3
    print(f"mujoco {mujoco.__version__}, timestep {timestep_ms:.1f} ms, nv {model.nv}, {contacts} contacts")
    print(f"{steps_per_s:,.0f} steps/s single-thread = {steps_per_s * model.opt.timestep:,.0f}x realtime")


if __name__ == "__main__":
    main()
