"""Headless offscreen renders of every camera in a scene, written as PNG files.

Rendering needs an OpenGL backend; on a machine without a display set ``MUJOCO_GL=egl`` (GPU or Mesa)
before MuJoCo is imported.
"""

from pathlib import Path

import cv2
import mujoco

from handrail.errors import HandrailError
from handrail.sim.leap import HOME_KEYFRAME_NAME
from handrail.sim.model import camera_names


class RenderError(HandrailError):
    """An offscreen render could not be made or written."""


def make_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """A ``mujoco.Renderer`` for ``model``, or a :class:`RenderError` that says how to get one.

    Raises:
        RenderError: no OpenGL context could be created, or the size exceeds the model's offscreen
            buffer (``<visual><global offwidth offheight>``).
    """
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except ValueError as error:
        raise RenderError(
            f"render {width}x{height}: {error} — render smaller or raise offwidth/offheight in the scene"
        ) from error
    except Exception as error:
        # Which exception a missing GL backend raises depends on the backend (GLFW, EGL, OSMesa).
        raise RenderError(
            f"no OpenGL context for offscreen rendering ({type(error).__name__}: {error}) — set "
            f"MUJOCO_GL=egl before starting Python and install libegl1 and libgl1-mesa-dri "
            f"(apt-get install libegl1 libgl1-mesa-dri)"
        ) from error


def render_cameras(
    model: mujoco.MjModel, data: mujoco.MjData, out_path: Path, width: int = 640, height: int = 480
) -> list[Path]:
    """Render ``data``'s state from every camera in ``model`` and write one PNG per camera.

    The files go next to ``out_path`` as ``<stem>_<camera>.png`` (``hand.png`` -> ``hand_cam_top.png``).
    ``data`` should be forwarded (``mj_forward`` or ``mj_step``) so its poses are current.

    Returns:
        The written paths, in camera id order.

    Raises:
        RenderError: the model has no cameras, no GL backend is available, or a file could not be written.
    """
    out_path = Path(out_path)
    names = camera_names(model)
    if not names:
        raise RenderError("render: the model has no cameras — add <camera> elements to the scene")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    renderer = make_renderer(model, width, height)
    try:
        for name in names:
            renderer.update_scene(data, camera=name)
            rgb = renderer.render()  # (height, width, 3) uint8
            path = out_path.with_name(f"{out_path.stem}_{name}.png")
            if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                raise RenderError(f"render: could not write {path} — check that the folder is writable")
            written.append(path)
    finally:
        renderer.close()
    return written


def render_home_pose(model: mujoco.MjModel, out_path: Path, width: int = 640, height: int = 480) -> list[Path]:
    """Render the scene at its ``home`` keyframe from every camera (what ``handrail model render`` does)."""
    data = mujoco.MjData(model)
    home_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_KEY, HOME_KEYFRAME_NAME)
    if home_id >= 0:
        mujoco.mj_resetDataKeyframe(model, data, home_id)
    mujoco.mj_forward(model, data)
    return render_cameras(model, data, out_path, width=width, height=height)
