"""The critic's privileged state: what the simulator knows and the hand's sensors do not.

Asymmetric actor-critic (MuJoCo Playground's ``privileged_state``, Pinto et al. 2017): the actor (the
exported policy) sees only the observation builder's proprioceptive fields; the value function, used
only in training and never exported, also sees the true state below, which makes its estimates — and
so the policy gradient — far less noisy. Layout, per hand (hand = palm frame):

- true joint positions [rad] (n), joint velocities [rad/s] (n), actuator torques [N·m] (n),
- fingertip positions [m] (tips x 3),
- cube position [m] (3) and its offset from where it lay at reset [m] (3), orientation wxyz (4),
  angular velocity [rad/s] (3), linear velocity [m/s] (3),
- the episode's encoder zero offsets [rad] (n) and command latency [periods] (1),
- the safety monitor's stall timer as a fraction of its limit per joint (n; zeros without a monitor).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from handrail.sim.batch_env import BatchHandEnv


class PrivilegedState:
    """Builds the privileged state of a :class:`~handrail.sim.batch_env.BatchHandEnv`'s hands."""

    def __init__(self, env: BatchHandEnv):
        self.env = env
        n = env.n_joints
        self.size = 5 * n + 3 * len(env.fingertip_sites) + 3 + 3 + 4 + 3 + 3 + 1

    def build(self, hands: NDArray[np.intp] | None) -> NDArray[np.float32]:
        """(len(hands), size) float32 for ``hands`` (all hands when None), from the current simulator state."""
        env = self.env
        index = slice(None) if hands is None else hands
        position_m, orientation, spin = env._cube_in_hand_frame(hands)
        tips = env._hand_frame.points_to_hand(env._site_xpos[index][:, env._tip_site_ids])
        count = len(position_m)
        params = env._params
        monitor = env.monitor
        if monitor is None:
            stall_fraction = np.zeros((count, env.n_joints))
        else:
            now_s = (env._episode_step[index] * env.control_period_s)[:, None]
            stalled_s = np.nan_to_num(now_s - monitor._stalled_since_s[index], nan=0.0)
            stall_fraction = stalled_s / monitor.config.stall_time_s
        parts = (
            env._qpos[index][:, env._qpos_ids],  # n
            env.joint_velocity(hands),  # n
            env._actuator_force[index][:, env._actuator_ids],  # n
            tips.reshape(count, -1),  # tips * 3
            position_m,  # 3
            position_m - env._cube_rest_m[index],  # 3
            orientation,  # 4
            spin,  # 3
            env._cube_linear_velocity(hands),  # 3
            params.zero_offset_rad[index],  # n
            (params.latency_substeps[index] / env.n_substeps)[:, None],  # 1
            stall_fraction,  # n
        )
        return np.concatenate(parts, axis=1).astype(np.float32)
