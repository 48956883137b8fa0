"""The scene with the bundled hand, shared by the vision tests (rendering needs ``MUJOCO_GL=egl`` headless,
which the top-level conftest sets)."""

import mujoco
import pytest

from handrail.robot.profile import load_profile
from handrail.sim import leap
from handrail.sim.model import build_scene_for_profile


@pytest.fixture(scope="session")
def scene_model() -> mujoco.MjModel:
    return build_scene_for_profile(load_profile())


@pytest.fixture
def home_data(scene_model: mujoco.MjModel) -> mujoco.MjData:
    """Fresh data at the ``home`` keyframe, forwarded: the cube at rest on the palm."""
    data = mujoco.MjData(scene_model)
    mujoco.mj_resetDataKeyframe(scene_model, data, scene_model.key(leap.HOME_KEYFRAME_NAME).id)
    mujoco.mj_forward(scene_model, data)
    return data
