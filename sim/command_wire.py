"""What happens to a joint target between the safety filter and the servo, for N simulated hands at once.

:class:`CommandWire` turns each control period's filtered targets into the actuator commands in effect at
every physics substep: the hand's zero-offset error (the servo executes the target in its own frame), action
noise, gear backlash (a dead band the servo set-point only leaves by pushing), and command latency with
jitter, resolved to physics steps — a command arrives a random number of substeps after it was sent, never
before, and never later than the ring of :data:`COMMANDS_IN_FLIGHT` commands holds. The randomized values
come from the episode's draw (``handrail.sim.batch_env``'s per-hand parameters).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# Commands kept in flight per hand; a command is in effect at most this many periods after it was sent.
COMMANDS_IN_FLIGHT = 4
NEVER = -(10**9)  # "arrived before the episode": a reset hand's command is in effect at once


class CommandWire:
    """The servo commands of N hands, n joints each, in flight: oldest first, with their arrival substeps."""

    def __init__(self, n_hands: int, n_joints: int, substeps: int):
        self.n_hands, self.substeps = n_hands, substeps
        self.commands = np.zeros((n_hands, COMMANDS_IN_FLIGHT, n_joints))
        self.arrivals = np.full((n_hands, COMMANDS_IN_FLIGHT), float(NEVER))  # substep of the episode
        self.servo_command = np.zeros((n_hands, n_joints))  # the last command, after backlash

    def reset(self, hands: NDArray[np.intp], servo_command: NDArray[np.float64]) -> None:
        """``hands`` start their episodes holding ``servo_command`` (in the servos' frame), already arrived."""
        self.servo_command[hands] = servo_command
        self.commands[hands] = servo_command[:, None, :]
        self.arrivals[hands] = float(NEVER)

    def send(
        self,
        target_rad: NDArray[np.float64],
        episode_step: NDArray[np.int64],
        rng: np.random.Generator,
        *,
        zero_offset_rad: NDArray[np.float64],
        action_noise_std_rad: NDArray[np.float64],
        backlash_rad: NDArray[np.float64],
        latency_substeps: NDArray[np.float64],
        jitter_std_substeps: NDArray[np.float64],
    ) -> None:
        """Queue this period's commands: zero offset, action noise, backlash, latency with jitter."""
        command = target_rad - zero_offset_rad
        if action_noise_std_rad.any():
            command = command + rng.standard_normal(command.shape) * action_noise_std_rad[:, None]
        if backlash_rad.any():
            half_play = 0.5 * backlash_rad
            self.servo_command = np.clip(self.servo_command, command - half_play, command + half_play)
        else:
            self.servo_command = command
        delay = latency_substeps.copy()
        if jitter_std_substeps.any():
            delay += rng.standard_normal(self.n_hands) * jitter_std_substeps
        # Rounded to physics steps; never before it was sent, nor later than the ring of commands holds.
        delay = np.clip(np.rint(delay), 0, (COMMANDS_IN_FLIGHT - 1) * self.substeps - 1)
        arrival = np.maximum(episode_step * self.substeps + delay, self.arrivals[:, -1])
        self.commands[:, :-1] = self.commands[:, 1:]
        self.commands[:, -1] = self.servo_command
        self.arrivals[:, :-1] = self.arrivals[:, 1:]
        self.arrivals[:, -1] = arrival

    def in_effect(self, episode_step: NDArray[np.int64]) -> NDArray[np.float64]:
        """The command in effect at each substep of this period, (N, substeps, n)."""
        substeps = episode_step[:, None] * self.substeps + np.arange(self.substeps)  # (N, S)
        arrived = np.count_nonzero(self.arrivals[:, :, None] <= substeps[:, None, :], axis=1)  # (N, S)
        # The oldest command in the ring has always arrived (see send's clip).
        return self.commands[np.arange(self.n_hands)[:, None], np.maximum(arrived - 1, 0)]
