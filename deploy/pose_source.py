"""Where the deploy loop gets the object pose: the latest estimate and its age, from any source.

A source has a ``name`` (recorded in the rollout log for every tick) and :meth:`PoseSource.latest`, which
returns the newest :class:`~handrail.sim.observation.ObjectPoseEstimate` in the hand (palm) frame or None.
The loop never waits for a pose: a stale or missing one is the observation builder's business.

- :class:`GroundTruthPose`: the virtual hand's simulator state over its control socket — only for the
  virtual hand, and labelled ``ground_truth`` so that no log can pass it off as a camera.
- The camera pipeline (issue 7) plugs in with the same interface.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np

from handrail.robot.emulator import VirtualHandProcess
from handrail.robot.profile import HandProfile
from handrail.sim.hand_frame import HandFrame
from handrail.sim.model import build_scene_for_profile
from handrail.sim.observation import ObjectPoseEstimate

GROUND_TRUTH = "ground_truth"


class PoseSource(Protocol):
    """The object pose for the control loop."""

    name: str

    def latest(self) -> ObjectPoseEstimate | None:
        """The newest estimate in the hand frame, with its age; None when there is none yet."""
        ...

    def close(self) -> None: ...


class PolledPose:
    """Shared by the pose sources that a thread of their own feeds: the newest pose in the hand frame, its age.

    A subclass stores each world-frame pose it gets with :meth:`_store`; :meth:`latest` returns the newest
    with its age since capture and never waits; :meth:`close` stops the thread.
    """

    name = "polled"

    def __init__(self, profile: HandProfile):
        self._hand_frame = HandFrame.of_model(build_scene_for_profile(profile))
        self._latest: tuple[float, np.ndarray, np.ndarray] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _store(self, captured_s: float, position_world_m: np.ndarray, quat_world_wxyz: np.ndarray) -> None:
        """Keep a pose captured at ``captured_s`` (monotonic) given in the world frame."""
        frame = self._hand_frame
        self._latest = (captured_s, frame.points_to_hand(position_world_m), frame.rotations_to_hand(quat_world_wxyz))

    def latest(self) -> ObjectPoseEstimate | None:
        latest = self._latest
        if latest is None:
            return None
        captured_s, position, orientation = latest
        return ObjectPoseEstimate(position, orientation, time.monotonic() - captured_s, self.name)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


class GroundTruthPose(PolledPose):
    """The cube pose the virtual hand's simulator holds, in the hand frame. Virtual hand only.

    A background thread asks the simulator ``rate_hz`` times a second (as a camera pipeline would deliver
    frames); :meth:`latest` returns the newest answer with its age and never waits on the socket.
    """

    name = GROUND_TRUTH

    def __init__(self, vhand: VirtualHandProcess, profile: HandProfile, rate_hz: float = 60.0):
        super().__init__(profile)
        self._vhand = vhand
        self._period_s = 1.0 / rate_hz
        self._poll()  # one answer before the loop starts
        self._thread = threading.Thread(target=self._run, name="handrail-ground-truth-pose", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        asked_s = time.monotonic()
        truth = self._vhand.ground_truth()
        self._store(
            asked_s,
            np.asarray(truth["object_position_m"], dtype=np.float64),
            np.asarray(truth["object_quat_wxyz"], dtype=np.float64),
        )

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            try:
                self._poll()
            except Exception:  # the virtual hand went away: the pose ages and turns invalid
                return


class NoPose:
    """No object pose at all (no camera yet): the observation's pose fields stay invalid."""

    name = "none"

    def latest(self) -> ObjectPoseEstimate | None:
        return None

    def close(self) -> None:
        pass
