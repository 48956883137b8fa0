"""The firmware of n virtual XC330 servos: current-based position control, thermal model, shutdowns.

Pure numpy, no registers and no I/O: :class:`ServoBank` takes what the registers say (goal, gains,
limits, as arrays in register units) and the true joint motion from MuJoCo, and returns the joint
torques plus the readings a real servo would report. The register glue lives in
:mod:`handrail.robot.virtual_hand`.

The control law follows the ROBOTIS e-manual's description of current-based position control: a
profile generator moves the position set-point towards Goal Position under Profile Velocity and Profile
Acceleration; a PID on the position error (gains scaled as KPP = P/128, KPI = I/65536, KPD = D/16)
gives a current command, limited by Goal Current and Current Limit; torque = torque constant x current.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from handrail.robot.motors import MotorFacts

# Hardware Error Status bits (ROBOTIS e-manual, X series).
OVERHEATING_BIT = 1 << 2
OVERLOAD_BIT = 1 << 5

# A small coreless DC servo's lumped thermal model; gives ~9 K rise at 350 mA and overheats in
# tens of seconds at stall current, the behaviour XC330 users report.
WINDING_RESISTANCE_OHM = 2.8  # 5 V / 1.8 A stall
THERMAL_RESISTANCE_K_PER_W = 25.0
THERMAL_CAPACITY_J_PER_K = 8.0
# Overload: the e-manual's "persistent load that exceeds maximum output" — modelled as a current
# demand at or above this fraction of stall current for OVERLOAD_TIME_S.
OVERLOAD_CURRENT_FRACTION = 0.95
OVERLOAD_TIME_S = 1.0
# How sharply backlash switches sides with the sign of the load torque [N·m].
BACKLASH_SWITCH_TORQUE_NM = 0.01
PRESENT_CURRENT_NOISE_MA = 2.0
# The e-manual gives KPD = D/16 but not the time unit of the error rate it multiplies. With the rate in
# ticks per 25 ms, the LEAP Hand's own setting (P 800, D 200) gives a finger a damping ratio near 0.7,
# the crisp, non-ringing response users see on the real hand.
DERIVATIVE_TIME_UNIT_S = 0.025
SUPPLY_VOLTAGE_V = 5.0  # the e-manual's recommended supply; stall and no-load figures are quoted there


@dataclass
class ServoCommands:
    """What the registers of all n servos currently command (register units), arrays of shape (n,)."""

    torque_enabled: NDArray[np.bool_]
    goal_position_ticks: NDArray[np.float64]
    goal_current_raw: NDArray[np.float64]
    current_limit_raw: NDArray[np.float64]
    position_p_gain: NDArray[np.float64]
    position_i_gain: NDArray[np.float64]
    position_d_gain: NDArray[np.float64]
    profile_velocity_raw: NDArray[np.float64]  # 0 = unlimited
    profile_acceleration_raw: NDArray[np.float64]  # 0 = unlimited
    temperature_limit_c: NDArray[np.float64]

    @classmethod
    def idle(cls, n: int, position_ticks: NDArray[np.float64]) -> ServoCommands:
        zeros = np.zeros(n)
        return cls(
            torque_enabled=np.zeros(n, dtype=bool),
            goal_position_ticks=position_ticks.astype(np.float64).copy(),
            goal_current_raw=np.full(n, 1750.0),
            current_limit_raw=np.full(n, 1750.0),
            position_p_gain=np.full(n, 800.0),
            position_i_gain=zeros.copy(),
            position_d_gain=zeros.copy(),
            profile_velocity_raw=zeros.copy(),
            profile_acceleration_raw=zeros.copy(),
            temperature_limit_c=np.full(n, 70.0),
        )


@dataclass
class ServoReadings:
    """What the servos report, in register units, arrays of shape (n,)."""

    position_ticks: NDArray[np.int64]
    velocity_raw: NDArray[np.int64]
    current_raw: NDArray[np.int64]
    temperature_c: NDArray[np.int64]
    hardware_error: NDArray[np.int64]
    moving: NDArray[np.bool_]
    trajectory_ticks: NDArray[np.int64]


@dataclass
class ServoBank:
    """n servos' firmware state. Joint <-> motor: motor_rad = direction * gear * (q + encoder_offset)."""

    facts: MotorFacts
    direction: NDArray[np.float64]  # (n,)
    gear_ratio: NDArray[np.float64]  # (n,)
    encoder_offset_rad: NDArray[np.float64]  # (n,) hidden reality
    torque_constant_scale: NDArray[np.float64]  # (n,) hidden reality
    backlash_rad: NDArray[np.float64]  # (n,) hidden reality
    position_noise_ticks: float
    ambient_temperature_c: float
    center_ticks: float
    ticks_per_rev: float
    velocity_rad_s_per_lsb: float
    profile_acceleration_rad_s2_per_lsb: float
    rng: np.random.Generator
    temperature_c: NDArray[np.float64] = field(init=False)
    hardware_error: NDArray[np.int64] = field(init=False)
    setpoint_ticks: NDArray[np.float64] | None = field(init=False, default=None)
    setpoint_velocity_ticks_s: NDArray[np.float64] = field(init=False)
    integral_tick_s: NDArray[np.float64] = field(init=False)
    current_ma: NDArray[np.float64] = field(init=False)
    overload_timer_s: NDArray[np.float64] = field(init=False)
    motor_lead_rad: NDArray[np.float64] = field(init=False)
    # Extra heating per servo [°C/s] on top of I²R (the emulator's heat fault: a slow, observable ramp).
    extra_heating_c_per_s: NDArray[np.float64] = field(init=False)

    def __post_init__(self) -> None:
        n = self.direction.shape[0]
        self.temperature_c = np.full(n, self.ambient_temperature_c)
        self.hardware_error = np.zeros(n, dtype=np.int64)
        self.setpoint_velocity_ticks_s = np.zeros(n)
        self.integral_tick_s = np.zeros(n)
        self.current_ma = np.zeros(n)
        self.overload_timer_s = np.zeros(n)
        self.extra_heating_c_per_s = np.zeros(n)
        self.motor_lead_rad = np.zeros(n)

    @property
    def ticks_per_rad(self) -> float:
        return self.ticks_per_rev / (2.0 * math.pi)

    def encoder_ticks(self, joint_q_rad: NDArray[np.float64]) -> NDArray[np.float64]:
        """Noise-free encoder reading [ticks, float] of the motor shaft for true joint angles."""
        motor_rad = self.direction * self.gear_ratio * (joint_q_rad + self.encoder_offset_rad) + self.motor_lead_rad
        return self.center_ticks + motor_rad * self.ticks_per_rad

    def reset_setpoint(self, joint_q_rad: NDArray[np.float64]) -> None:
        """Set-point := present position (torque-on, reboot, watchdog stop)."""
        self.setpoint_ticks = self.encoder_ticks(joint_q_rad)
        self.setpoint_velocity_ticks_s[:] = 0.0
        self.integral_tick_s[:] = 0.0

    def step(
        self,
        commands: ServoCommands,
        joint_q_rad: NDArray[np.float64],
        dt_s: float,
        joint_qd_rad_s: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """Advance the firmware by ``dt_s``; returns the torque on each joint [N·m] (n,).

        ``joint_qd_rad_s`` (true joint speeds) lets the back-EMF limit the current; None means at rest.
        """
        if joint_qd_rad_s is None:
            joint_qd_rad_s = np.zeros_like(joint_q_rad)
        if self.setpoint_ticks is None:
            self.reset_setpoint(joint_q_rad)
        assert self.setpoint_ticks is not None
        active = commands.torque_enabled & (self.hardware_error == 0)
        present_ticks = self.encoder_ticks(joint_q_rad)
        # Passive servos track where they are, so enabling torque does not jump.
        self.setpoint_ticks = np.where(active, self.setpoint_ticks, present_ticks)
        self.setpoint_velocity_ticks_s = np.where(active, self.setpoint_velocity_ticks_s, 0.0)

        # Profile generator: velocity- and acceleration-limited motion of the set-point towards the goal.
        ticks_per_lsb_velocity = self.velocity_rad_s_per_lsb * self.ticks_per_rad
        ticks_per_lsb_acceleration = self.profile_acceleration_rad_s2_per_lsb * self.ticks_per_rad
        max_speed = np.where(
            commands.profile_velocity_raw > 0, commands.profile_velocity_raw * ticks_per_lsb_velocity, np.inf
        )
        max_accel = np.where(
            commands.profile_acceleration_raw > 0,
            commands.profile_acceleration_raw * ticks_per_lsb_acceleration,
            np.inf,
        )
        remaining = commands.goal_position_ticks - self.setpoint_ticks
        # Speed that still allows stopping at the goal under the acceleration limit.
        stopping_speed = np.sqrt(2.0 * np.where(np.isfinite(max_accel), max_accel, 1e12) * np.abs(remaining))
        desired_speed = np.minimum(np.minimum(max_speed, stopping_speed), np.abs(remaining) / dt_s)
        desired_velocity = np.sign(remaining) * desired_speed
        velocity_change = np.clip(
            desired_velocity - self.setpoint_velocity_ticks_s, -max_accel * dt_s, max_accel * dt_s
        )
        self.setpoint_velocity_ticks_s = np.where(active, self.setpoint_velocity_ticks_s + velocity_change, 0.0)
        self.setpoint_ticks = np.where(
            active, self.setpoint_ticks + self.setpoint_velocity_ticks_s * dt_s, present_ticks
        )

        # Position PID -> current command [mA], limited by Goal Current and Current Limit.
        error_ticks = self.setpoint_ticks - present_ticks
        # The derivative acts on the firmware's velocity estimate (filtered, not the raw 1-tick steps of
        # the encoder): set-point velocity minus shaft velocity.
        motor_velocity_ticks_s = self.direction * self.gear_ratio * joint_qd_rad_s * self.ticks_per_rad
        error_rate_ticks_per_unit = (self.setpoint_velocity_ticks_s - motor_velocity_ticks_s) * DERIVATIVE_TIME_UNIT_S
        self.integral_tick_s = np.where(active, self.integral_tick_s + error_ticks * dt_s, 0.0)
        command_ma = (
            commands.position_p_gain / 128.0 * error_ticks
            + commands.position_i_gain / 65536.0 * self.integral_tick_s * 1000.0
            + commands.position_d_gain / 16.0 * error_rate_ticks_per_unit
        ) * self.facts.current_ma_per_lsb
        limit_ma = (
            np.minimum(np.abs(commands.goal_current_raw), commands.current_limit_raw) * self.facts.current_ma_per_lsb
        )
        self.current_ma = np.where(active, np.clip(command_ma, -limit_ma, limit_ma), 0.0)

        # Overload: sustained demand near stall current (only reachable with a high Current Limit).
        stall_ma = self.facts.stall_current_a * 1000.0
        overloaded = (
            active
            & (np.abs(command_ma) >= OVERLOAD_CURRENT_FRACTION * stall_ma)
            & (limit_ma >= OVERLOAD_CURRENT_FRACTION * stall_ma)
        )
        self.overload_timer_s = np.where(overloaded, self.overload_timer_s + dt_s, 0.0)
        self.hardware_error |= np.where(self.overload_timer_s >= OVERLOAD_TIME_S, OVERLOAD_BIT, 0)

        # Thermal model: I^2 R heating, Newton cooling towards ambient.
        heating_w = (self.current_ma / 1000.0) ** 2 * WINDING_RESISTANCE_OHM
        cooling_w = (self.temperature_c - self.ambient_temperature_c) / THERMAL_RESISTANCE_K_PER_W
        self.temperature_c += (heating_w - cooling_w) * dt_s / THERMAL_CAPACITY_J_PER_K
        self.temperature_c += self.extra_heating_c_per_s * dt_s
        self.hardware_error |= np.where(self.temperature_c > commands.temperature_limit_c, OVERHEATING_BIT, 0)

        # A shutdown drops torque at once (Shutdown register default: overload, overheating, shock).
        self.current_ma = np.where(self.hardware_error != 0, 0.0, self.current_ma)
        motor_torque_nm = self.facts.torque_constant_nm_per_a * self.torque_constant_scale * self.current_ma / 1000.0
        joint_torque_nm = motor_torque_nm * self.direction * self.gear_ratio
        # Backlash: the motor (and its encoder) leads the link by half the play, towards the load.
        self.motor_lead_rad = 0.5 * self.backlash_rad * np.tanh(motor_torque_nm / BACKLASH_SWITCH_TORQUE_NM)
        return joint_torque_nm

    def readings(self, joint_q_rad: NDArray[np.float64], joint_qd_rad_s: NDArray[np.float64]) -> ServoReadings:
        """What the servos report now (quantized, with encoder noise)."""
        n = joint_q_rad.shape[0]
        noise = self.rng.normal(0.0, self.position_noise_ticks, n) if self.position_noise_ticks > 0 else 0.0
        position = np.rint(self.encoder_ticks(joint_q_rad) + noise).astype(np.int64)
        motor_rad_s = self.direction * self.gear_ratio * joint_qd_rad_s
        velocity = np.trunc(motor_rad_s / self.velocity_rad_s_per_lsb).astype(np.int64)
        current_noise = self.rng.normal(0.0, PRESENT_CURRENT_NOISE_MA, n) * (self.current_ma != 0)
        current = np.rint((self.current_ma + current_noise) / self.facts.current_ma_per_lsb).astype(np.int64)
        setpoint = self.setpoint_ticks if self.setpoint_ticks is not None else position.astype(np.float64)
        return ServoReadings(
            position_ticks=position,
            velocity_raw=velocity,
            current_raw=current,
            temperature_c=np.rint(self.temperature_c).astype(np.int64),
            hardware_error=self.hardware_error.copy(),
            moving=np.abs(velocity) > 0,
            trajectory_ticks=np.rint(setpoint).astype(np.int64),
        )
