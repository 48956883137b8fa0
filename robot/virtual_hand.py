"""The virtual hand's body: MuJoCo physics of the hand and cube, servo firmware, and its registers.

:class:`VirtualHand` is I/O-free. It owns a :class:`~handrail.robot.virtual_bus.VirtualBus` (the
registers of every servo) and listens to it as its :class:`~handrail.robot.virtual_bus.BusObserver`:
accepted writes become servo commands (after the reality's command latency), reads get fresh Present
registers. :meth:`VirtualHand.step` advances physics and firmware by one MuJoCo timestep. The process
that puts it behind a pseudo-terminal is :mod:`handrail.robot.emulator`.

The hidden :class:`~handrail.robot.reality.Reality` is applied here: friction, damping, armature,
torque constant, backlash, encoder offsets, noise, latency, cube mass and friction.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

import mujoco
import numpy as np
from numpy.typing import NDArray

from handrail.robot.control_table import load_control_table
from handrail.robot.errors import RobotError
from handrail.robot.motors import motor_facts
from handrail.robot.profile import HandProfile
from handrail.robot.reality import Reality
from handrail.robot.servo_registers import ServoRegisters, baud_rate_index
from handrail.robot.virtual_bus import VirtualBus
from handrail.robot.virtual_servo import OVERHEATING_BIT, OVERLOAD_BIT, ServoBank, ServoCommands
from handrail.sim.model import build_scene_for_profile, cube_pose

BUS_WATCHDOG_UNIT_S = 0.020  # Bus Watchdog(98) LSB, e-manual
BUS_WATCHDOG_TRIPPED = -1  # the register value a servo shows after its watchdog fired
SETTLE_LIMP_S = 1.0  # simulated before the hand is offered on the wire
HEAT_RAMP_C_PER_S = 10.0  # the heat fault's ramp: room to a 70 °C limit in a few seconds

# Register name -> ServoCommands field, for registers that take effect without latency.
_COMMAND_REGISTERS = {
    "Goal Current": "goal_current_raw",
    "Current Limit": "current_limit_raw",
    "Position P Gain": "position_p_gain",
    "Position I Gain": "position_i_gain",
    "Position D Gain": "position_d_gain",
    "Profile Velocity": "profile_velocity_raw",
    "Profile Acceleration": "profile_acceleration_raw",
    "Temperature Limit": "temperature_limit_c",
}


class VirtualHand:
    """MuJoCo hand + n virtual servos speaking through a VirtualBus. Not thread-safe."""

    def __init__(self, profile: HandProfile, reality: Reality, *, noise_seed: int = 0):
        if reality.joint_names != profile.joint_names:
            raise RobotError(
                f"reality is for joints {reality.joint_names}, profile {profile.name!r} has {profile.joint_names} "
                "— draw the reality from this profile"
            )
        self.profile = profile
        self.reality = reality
        self.model = build_scene_for_profile(profile)
        self.data = mujoco.MjData(self.model)
        mujoco.mj_resetDataKeyframe(self.model, self.data, 0)
        self.n = len(profile.joints)
        self.facts = motor_facts(profile.bus.motor_model)
        self.table = load_control_table(self.facts.control_table)
        self._joint_qpos = np.array([self.model.joint(j.mjcf_joint).qposadr[0] for j in profile.joints])
        self._joint_dof = np.array([self.model.joint(j.mjcf_joint).dofadr[0] for j in profile.joints])
        self._actuators = np.array([self.model.actuator(j.mjcf_actuator).id for j in profile.joints])
        self._apply_reality()
        self._use_torque_actuators()

        direction = np.array([j.direction for j in profile.joints], dtype=np.float64)
        gear = np.array([j.gear_ratio for j in profile.joints], dtype=np.float64)
        self.bank = ServoBank(
            facts=self.facts,
            direction=direction,
            gear_ratio=gear,
            encoder_offset_rad=reality.per_joint("encoder_offset_rad"),
            torque_constant_scale=reality.per_joint("torque_constant_scale"),
            backlash_rad=reality.per_joint("backlash_rad"),
            position_noise_ticks=reality.position_noise_ticks,
            ambient_temperature_c=reality.ambient_temperature_c,
            center_ticks=self.table.type_info["value_of_zero_radian_position"],
            ticks_per_rev=self.table.type_info["value_of_max_radian_position"] + 1,
            velocity_rad_s_per_lsb=self.table.unit_info["Present Velocity"].value,
            profile_acceleration_rad_s2_per_lsb=self.facts.profile_acceleration_rad_s2_per_lsb,
            rng=np.random.default_rng(noise_seed),
        )
        self.commands = ServoCommands.idle(self.n, self.bank.encoder_ticks(self.joint_positions_rad()))
        baud_index = baud_rate_index(profile.bus.baud)
        servos = [ServoRegisters(self.table, {"ID": j.motor_id, "Baud Rate": baud_index}) for j in profile.joints]
        self._index_of_servo = {id(servo): index for index, servo in enumerate(servos)}
        self.bus = VirtualBus(servos, observer=self)
        self._servos = servos
        self._pending_goals: collections.deque[tuple[float, int, float]] = collections.deque()
        self._last_traffic_s = 0.0
        self._watchdog_tripped = np.zeros(self.n, dtype=bool)
        self._stuck_qpos: dict[int, float] = {}
        self._readings_time_s = -1.0
        self._readings: tuple[list[int], ...] | None = None
        self._published_errors = np.zeros(self.n, dtype=np.int64)
        for servo in servos:
            self._sync_commands_from_registers(servo)
        # A real hand is found at rest: powered, torque off, fingers settled where gravity leaves them.
        for _ in range(round(SETTLE_LIMP_S / self.timestep_s)):
            self.step()

    # -- model setup ---------------------------------------------------------------------------------

    def _apply_reality(self) -> None:
        reality, model = self.reality, self.model
        model.dof_frictionloss[self._joint_dof] *= reality.per_joint("frictionloss_scale")
        model.dof_damping[self._joint_dof] *= reality.per_joint("damping_scale")
        model.dof_armature[self._joint_dof] *= reality.per_joint("armature_scale")
        cube = model.body("cube")
        model.body_mass[cube.id] *= reality.object_mass_scale
        model.body_inertia[cube.id] *= reality.object_mass_scale
        for geom_id in range(model.ngeom):
            if model.geom_bodyid[geom_id] == cube.id and model.geom_contype[geom_id]:
                model.geom_friction[geom_id, 0] *= reality.object_friction_scale

    def _use_torque_actuators(self) -> None:
        """Turn the hand's actuators into plain motors: ctrl is the joint torque [N·m] the servo model computes.

        Whatever the MJCF declares for them (position gains, a force range, a gear, activation dynamics) is
        replaced: the profile's servos (current-based position control, current limit, profile velocity) are
        the only controller and the only limit. Bodies, geoms, inertias, joint ranges, damping, armature and
        friction stay the MJCF's (scaled by the reality).
        """
        model = self.model
        for actuator_id in self._actuators:
            model.actuator_gainprm[actuator_id, :] = 0.0
            model.actuator_gainprm[actuator_id, 0] = 1.0
            model.actuator_biasprm[actuator_id, :] = 0.0
            model.actuator_biastype[actuator_id] = mujoco.mjtBias.mjBIAS_NONE
            model.actuator_dyntype[actuator_id] = mujoco.mjtDyn.mjDYN_NONE
            model.actuator_gear[actuator_id, :] = (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
            model.actuator_ctrllimited[actuator_id] = 0
            model.actuator_forcelimited[actuator_id] = 0
        self.data.ctrl[:] = 0.0

    # -- state ---------------------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        """Simulated time [s]; the emulator keeps it in step with the wall clock."""
        return float(self.data.time)

    @property
    def timestep_s(self) -> float:
        return float(self.model.opt.timestep)

    def joint_positions_rad(self) -> NDArray[np.float64]:
        """True joint angles (not what the encoders say) [rad], policy order."""
        return self.data.qpos[self._joint_qpos].copy()

    def joint_velocities_rad_s(self) -> NDArray[np.float64]:
        return self.data.qvel[self._joint_dof].copy()

    def object_pose(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Ground-truth cube position [m] and orientation (wxyz) in the world frame."""
        pose = cube_pose(self.model, self.data)
        return pose.position_m, pose.quat_wxyz

    # -- faults --------------------------------------------------------------------------------------

    def stick_joint(self, index: int) -> None:
        """Freeze joint ``index`` where it is (a jammed tendon or gear)."""
        self._stuck_qpos[index] = float(self.data.qpos[self._joint_qpos[index]])

    def overload(self, index: int) -> None:
        """Raise the overload error of servo ``index`` (it shuts down, as a real one does)."""
        self.bank.hardware_error[index] |= OVERLOAD_BIT

    def overheat(self, index: int) -> None:
        """Heat servo ``index`` past its temperature limit (it shuts down through its thermal model)."""
        self.bank.temperature_c[index] = self.commands.temperature_limit_c[index] + 3.0
        self.bank.hardware_error[index] |= OVERHEATING_BIT

    def heat(self, index: int, rate_c_per_s: float = HEAT_RAMP_C_PER_S) -> None:
        """Warm servo ``index`` steadily (a blocked fan, a hot room): its reading climbs through the monitor's
        margin before the servo's own cut-off at its Temperature Limit, as a real overheating does."""
        self.bank.extra_heating_c_per_s[index] = rate_c_per_s

    def clear_faults(self) -> None:
        """Unstick joints (hardware errors stay latched until a reboot, as on a real servo)."""
        self._stuck_qpos.clear()
        self.bank.extra_heating_c_per_s[:] = 0.0

    # -- bus observer --------------------------------------------------------------------------------

    def note_traffic(self) -> None:
        """An instruction packet reached the servos: feed their bus watchdogs."""
        self._last_traffic_s = self.time_s

    def before_read(self, servo: ServoRegisters) -> None:
        index = self._index_of_servo[id(servo)]
        if self._readings is None or self._readings_time_s != self.time_s:
            readings = self.bank.readings(self.joint_positions_rad(), self.joint_velocities_rad_s())
            # Plain lists: 16 servos x 7 registers per read must stay cheap for the bus to keep up.
            self._readings = (
                readings.position_ticks.tolist(),
                readings.velocity_raw.tolist(),
                readings.current_raw.tolist(),
                np.clip(readings.temperature_c, 0, 255).tolist(),
                readings.trajectory_ticks.tolist(),
                readings.moving.astype(int).tolist(),
            )
            self._readings_time_s = self.time_s
        position, velocity, current, temperature, trajectory, moving = self._readings
        servo.set("Present Position", position[index])
        servo.set("Present Velocity", velocity[index])
        servo.set("Present Current", current[index])
        servo.set("Present Temperature", temperature[index])
        servo.set("Position Trajectory", trajectory[index])
        servo.set("Moving", moving[index])
        servo.set("Realtime Tick", int(self.time_s * 1000.0) % 32768)

    def on_write(self, servo: ServoRegisters, written: Mapping[str, int]) -> None:
        index = self._index_of_servo[id(servo)]
        if "Torque Enable" in written:
            enabled = bool(written["Torque Enable"])
            if enabled and not self.commands.torque_enabled[index]:
                present = self.bank.encoder_ticks(self.joint_positions_rad())[index]
                if self.bank.setpoint_ticks is not None:
                    self.bank.setpoint_ticks[index] = present
            self.commands.torque_enabled[index] = enabled
        if "Goal Position" in written:
            if self._watchdog_tripped[index]:
                # A tripped watchdog ignores goals until the host clears it by writing Bus Watchdog = 0.
                servo.set("Goal Position", round(self.commands.goal_position_ticks[index]))
            else:
                due_s = self.time_s + self.reality.command_latency_s
                self._pending_goals.append((due_s, index, float(written["Goal Position"])))
        if "Bus Watchdog" in written and written["Bus Watchdog"] == 0:
            self._watchdog_tripped[index] = False
        for register, field_name in _COMMAND_REGISTERS.items():
            if register in written:
                getattr(self.commands, field_name)[index] = float(written[register])

    def on_reboot(self, servo: ServoRegisters) -> None:
        index = self._index_of_servo[id(servo)]
        self.bank.hardware_error[index] = 0
        self._published_errors[index] = 0
        self._watchdog_tripped[index] = False
        self._sync_commands_from_registers(servo)
        self.commands.torque_enabled[index] = False

    def _sync_commands_from_registers(self, servo: ServoRegisters) -> None:
        index = self._index_of_servo[id(servo)]
        for register, field_name in _COMMAND_REGISTERS.items():
            getattr(self.commands, field_name)[index] = float(servo.get(register))
        self.commands.goal_position_ticks[index] = float(servo.get("Goal Position"))
        self.commands.torque_enabled[index] = servo.torque_enabled

    # -- time ----------------------------------------------------------------------------------------

    def _apply_due_goals(self) -> None:
        while self._pending_goals and self._pending_goals[0][0] <= self.time_s:
            _, index, goal_ticks = self._pending_goals.popleft()
            if not self._watchdog_tripped[index]:
                self.commands.goal_position_ticks[index] = goal_ticks

    def _check_watchdogs(self) -> None:
        silent_s = self.time_s - self._last_traffic_s
        for index, servo in enumerate(self._servos):
            watchdog = servo.get("Bus Watchdog")
            if watchdog > 0 and not self._watchdog_tripped[index] and silent_s > watchdog * BUS_WATCHDOG_UNIT_S:
                # The servo stops where it is and refuses goals until the host clears the watchdog.
                self._watchdog_tripped[index] = True
                present = self.bank.encoder_ticks(self.joint_positions_rad())[index]
                self.commands.goal_position_ticks[index] = present
                if self.bank.setpoint_ticks is not None:
                    self.bank.setpoint_ticks[index] = present
                    self.bank.setpoint_velocity_ticks_s[index] = 0.0
                servo.set("Goal Position", round(present))
                servo.set("Bus Watchdog", BUS_WATCHDOG_TRIPPED)

    @property
    def watchdog_tripped(self) -> NDArray[np.bool_]:
        return self._watchdog_tripped.copy()

    def step(self) -> None:
        """Advance firmware and physics by one MuJoCo timestep."""
        self._apply_due_goals()
        self._check_watchdogs()
        torque_nm = self.bank.step(
            self.commands, self.joint_positions_rad(), self.timestep_s, self.joint_velocities_rad_s()
        )
        self.data.ctrl[self._actuators] = torque_nm
        mujoco.mj_step(self.model, self.data)
        for index, qpos in self._stuck_qpos.items():
            self.data.qpos[self._joint_qpos[index]] = qpos
            self.data.qvel[self._joint_dof[index]] = 0.0
        if np.any(self.bank.hardware_error != self._published_errors):
            for index in np.flatnonzero(self.bank.hardware_error != self._published_errors):
                servo = self._servos[index]
                servo.set("Hardware Error Status", int(self.bank.hardware_error[index]))
                if self.bank.hardware_error[index]:
                    servo.set("Torque Enable", 0)
                    self.commands.torque_enabled[index] = False
            self._published_errors = self.bank.hardware_error.copy()
