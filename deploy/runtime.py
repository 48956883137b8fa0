"""The policy runtime: an ONNX policy file, checked against the hand, run by onnxruntime for one tick at a time.

No torch. The file's metadata must match the hand profile (and calibration) in use, or
:class:`~handrail.deploy.policy_match.PolicyMismatchError` lists every difference. The session is tuned
for the latency of one small inference per tick, not throughput: one intra-op and one inter-op thread
(a thread pool's wake-up costs more than a 16-joint MLP), sequential execution, all graph
optimizations, no memory-pattern planning across calls of different batch size (we always run batch 1),
and CPU only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from handrail.deploy.policy_file import PolicyFileError, PolicyMetadata
from handrail.deploy.policy_match import check_policy_file
from handrail.deploy.rollout_records import file_sha256
from handrail.robot.profile import HandProfile
from handrail.sim.actions import ActionMap
from handrail.sim.observation import ObservationSpec


class PolicyOutputError(PolicyFileError):
    """The policy produced something that must never reach the hand (NaN, inf, wrong shape)."""


def session_options() -> ort.SessionOptions:
    """onnxruntime settings for one low-latency inference per control tick."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_mem_pattern = False
    return options


class PolicyRuntime:
    """A policy file that has been checked against ``profile``; :meth:`act` maps one observation to one action.

    Raises PolicyFileError (unreadable file, missing metadata) or PolicyMismatchError (built for another
    hand) on construction. ``warnings`` holds differences that do not refuse the policy (e.g. the profile
    fingerprint after a recalibration).
    """

    def __init__(self, path: str | Path, profile: HandProfile, *, history: int | None = None):
        self.path = Path(path)
        self.metadata: PolicyMetadata
        self.metadata, self.warnings = check_policy_file(self.path, profile, history=history)
        self.sha256 = file_sha256(self.path)
        self.observation_spec = ObservationSpec.from_dict(self.metadata.observation_spec)
        # The action map comes from the policy: --speed-scale tightens the filter, not what an action means.
        self.action_map = ActionMap.from_dict(self.metadata.action_spec)
        self.n_obs = self.observation_spec.n_obs
        self.n_act = self.action_map.n_joints
        self._session = ort.InferenceSession(str(self.path), session_options(), providers=["CPUExecutionProvider"])
        self._input = np.zeros((1, self.n_obs), dtype=np.float32)
        self._feed = {"obs": self._input}
        self._session.run(["action"], self._feed)  # the first run allocates; keep it out of the loop

    @property
    def task(self) -> str:
        return self.metadata.task

    @property
    def history(self) -> int:
        return self.metadata.history

    @property
    def max_pose_age_s(self) -> float:
        return self.metadata.max_pose_age_s

    def act(self, obs: NDArray[np.float32]) -> NDArray[np.float64]:
        """The action (n_act,) for one observation (n_obs,). Raises PolicyOutputError on a non-finite action."""
        self._input[0] = obs
        (action,) = self._session.run(["action"], self._feed)
        result = np.asarray(action[0], dtype=np.float64)
        if result.shape != (self.n_act,) or not np.isfinite(result).all():
            raise PolicyOutputError(
                f"policy {self.path.name} returned {result.tolist()} — not {self.n_act} finite numbers; "
                "the hand was stopped. Check the policy file (export parity) and the observation it was given"
            )
        return result
