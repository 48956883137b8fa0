"""Facts about the servo models handrail drives, from the makers' data sheets.

The register map is not here: it is read from the control-table files that ship inside
``dynamixel-sdk`` (:mod:`handrail.robot.control_table`). This module holds what those files do not say:
electrical and mechanical figures used by the virtual hand and by unit conversions.
"""

from __future__ import annotations

from dataclasses import dataclass

from handrail.robot.errors import ProfileError


@dataclass(frozen=True)
class MotorFacts:
    """Data-sheet figures of one servo model (at its recommended supply voltage)."""

    model_name: str  # as written in a profile, e.g. "XC330-M288"
    control_table: str  # the dynamixel-sdk control-table file stem, e.g. "xc330_m288_fw52"
    current_ma_per_lsb: float  # Present/Goal Current register unit [mA]
    torque_constant_nm_per_a: float  # output-shaft torque per motor current [N·m/A]
    stall_torque_nm: float  # [N·m]
    stall_current_a: float  # [A]
    no_load_speed_rad_s: float  # [rad/s]
    profile_acceleration_rad_s2_per_lsb: float  # Profile Acceleration register unit [rad/s^2]
    max_baud: int  # [bit/s]
    max_operating_temperature_c: float  # [degC]
    # The servo's own mechanics at its output shaft, which a hand MJCF may leave out: the rotor's inertia
    # through the gearbox (a joint's armature) and the gearbox's static friction (its frictionloss).
    reflected_inertia_kg_m2: float
    gear_friction_nm: float


# ROBOTIS e-manual, XC330-M288-T: 0.93 N·m at 5.0 V, 1.80 A (0.517 N·m/A), 81 rev/min no load,
# 9,600 bps - 4 Mbps, -5 to +70 degC; current register unit 1 mA.
XC330_M288 = MotorFacts(
    model_name="XC330-M288",
    # The fw52 file carries the e-manual's Indirect Data address (208); the older file says 224.
    control_table="xc330_m288_fw52",
    current_ma_per_lsb=1.0,
    torque_constant_nm_per_a=0.517,
    stall_torque_nm=0.93,
    stall_current_a=1.80,
    no_load_speed_rad_s=81.0 * 2.0 * 3.141592653589793 / 60.0,
    profile_acceleration_rad_s2_per_lsb=214.577 * 2.0 * 3.141592653589793 / 3600.0,  # 214.577 rev/min^2
    max_baud=4_000_000,
    max_operating_temperature_c=70.0,
    # Not on the data sheet: the figures of the bundled hand model (sim/models/leap_hand.xml), which the
    # training randomization and the virtual hand's realities are centred on. Without them a light finger link
    # (MuJoCo Menagerie's LEAP model has armature 0 and frictionloss 0.001) reaches 5-6 rad/s within a tick of
    # the servo's current limit, which a geared XC330 does not.
    reflected_inertia_kg_m2=0.002,
    gear_friction_nm=0.02,
)

MOTORS: dict[str, MotorFacts] = {XC330_M288.model_name: XC330_M288}


def motor_facts(model_name: str) -> MotorFacts:
    """The facts for a profile's ``bus.motor_model``; ProfileError lists the known models."""
    try:
        return MOTORS[model_name]
    except KeyError:
        raise ProfileError(
            f"motor model {model_name!r} is not known to handrail — known: {', '.join(MOTORS)}; "
            "add its data-sheet figures to handrail.robot.motors"
        ) from None
