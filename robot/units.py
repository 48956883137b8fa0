"""Conversions between servo register units and joint units — the one home of these formulas.

Frames and signs: a servo reports its output-shaft angle in ticks, ``center_ticks`` meaning 0 rad.
With the profile's direction d (+1/-1), gear ratio g (motor turns per joint turn) and zero offset z [rad]:

    motor_rad = (ticks - center_ticks) * 2π / ticks_per_rev
    joint_rad = d * motor_rad / g - z

Velocity and current follow the same direction and gear (current is reported in the joint's sense).
The bus driver and the virtual hand both use this module, so they cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class JointUnits:
    """Vectorized conversions for n joints in policy order (arrays of shape (n,))."""

    direction: NDArray[np.float64]  # (n,) +1 / -1
    gear_ratio: NDArray[np.float64]  # (n,) motor turns per joint turn
    zero_offset_rad: NDArray[np.float64]  # (n,)
    center_ticks: int  # register value meaning 0 rad (control table: value_of_zero_radian_position)
    ticks_per_rev: int  # encoder resolution
    velocity_rad_s_per_lsb: float  # Present Velocity unit [rad/s]
    current_ma_per_lsb: float  # Present Current unit [mA]

    def __post_init__(self) -> None:
        shapes = {np.shape(self.direction), np.shape(self.gear_ratio), np.shape(self.zero_offset_rad)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"direction, gear_ratio and zero_offset_rad need one common shape (n,), got {shapes}")

    @property
    def rad_per_tick(self) -> float:
        """Motor-shaft angle of one encoder tick [rad]."""
        return 2.0 * math.pi / self.ticks_per_rev

    def ticks_to_rad(self, ticks: ArrayLike) -> NDArray[np.float64]:
        """Present/Goal Position [ticks] -> joint angle [rad]."""
        motor_rad = (np.asarray(ticks, dtype=np.float64) - self.center_ticks) * self.rad_per_tick
        return self.direction * motor_rad / self.gear_ratio - self.zero_offset_rad

    def rad_to_ticks(self, joint_rad: ArrayLike) -> NDArray[np.int64]:
        """Joint angle [rad] -> Goal Position [ticks], rounded to the nearest tick."""
        motor_rad = (np.asarray(joint_rad, dtype=np.float64) + self.zero_offset_rad) * self.gear_ratio * self.direction
        return np.rint(motor_rad / self.rad_per_tick + self.center_ticks).astype(np.int64)

    def velocity_raw_to_rad_s(self, raw: ArrayLike) -> NDArray[np.float64]:
        """Present Velocity [LSB] -> joint speed [rad/s]."""
        return self.direction * np.asarray(raw, dtype=np.float64) * self.velocity_rad_s_per_lsb / self.gear_ratio

    def rad_s_to_velocity_raw(self, joint_rad_s: ArrayLike) -> NDArray[np.int64]:
        """Joint speed magnitude [rad/s] -> Profile Velocity [LSB], rounded down so it never exceeds it.

        Profile Velocity is unsigned; 0 would mean "no limit" on a Dynamixel, so the result is at least 1.
        """
        motor_rad_s = np.abs(np.asarray(joint_rad_s, dtype=np.float64)) * self.gear_ratio
        return np.maximum(np.floor(motor_rad_s / self.velocity_rad_s_per_lsb), 1).astype(np.int64)

    def current_raw_to_ma(self, raw: ArrayLike) -> NDArray[np.float64]:
        """Present Current [LSB] -> current in the joint's sense [mA]."""
        return self.direction * np.asarray(raw, dtype=np.float64) * self.current_ma_per_lsb

    def ma_to_current_raw(self, current_ma: ArrayLike) -> NDArray[np.int64]:
        """Current magnitude [mA] -> Current Limit [LSB], rounded down."""
        return np.floor(np.abs(np.asarray(current_ma, dtype=np.float64)) / self.current_ma_per_lsb).astype(np.int64)
