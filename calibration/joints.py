"""Joint calibration against the mechanical stops: zero offsets and direction signs, with the hand in the loop.

What the host can and cannot see. A servo closes its position loop on its own encoder, so the host's
view is self-consistent whatever the profile says: a wrong zero offset or a wrong direction sign still
gives measured = commanded. The one reference the hand itself offers is its **mechanical stops**, whose
joint angles the MJCF gives (``range``). Each joint is pushed, slowly and at reduced current, against
its stops (:mod:`~handrail.calibration.joint_plan` says which joints go together and where the others
wait); contact is the joint standing still (|velocity| < ``contact_speed_rad_s``) while its current is
near the reduced limit, for ``contact_ticks`` readings in a row; the contact angle is the mean reading
over ``dwell_s`` after that.

From the raw contact readings ``u`` (the uncalibrated profile's frame: zero offset 0, its directions):

- two stops: under the profile's direction ``q = u - z``, so ``z = mean(u_low - q_low, u_high - q_high)``;
  under the opposite direction the joint went the other way, ``q = -u - z``, so
  ``z' = mean(-u_low - q_high, -u_high - q_low)``. Averaging the two stops cancels gear backlash and the
  stops' compliance (the servo leads the link by half the play towards the load, on both sides). The
  measured span ``u_high - u_low`` must exceed the MJCF span by no more than play and compliance allow
  (``span_excess_bounds_rad``), else something other than a stop was hit.
- one stop (a joint whose other stop is out of reach): ``z = u - q_stop - side * c``, with ``c`` the
  hand's median half excess span (half play plus compliance) measured on the two-stop joints.
- direction: an encoder offset is small (``max_offset_rad``). If only the profile's direction gives a
  plausible offset, the sign is **confirmed**; if only the opposite one does, the profile's sign is
  **wrong** — reported, and the measured sign written to the overlay; if both do (a range symmetric about
  zero, like abduction's), the stops cannot tell and the sign is **unverified** (kept as the profile says).

Calibration mode. The safety layer's soft limits sit inside the stops, and before calibration neither
the zero nor the sign is known, so the run uses a *calibration profile*, built here and never saved: the
profile with zero offsets 0, soft limits widened to ``±(max(|low|, |high|) + limit_margin_rad)`` about the
raw zero (any stop, under either sign, is reachable), the current limit lowered to ``current_limit_ma``
speeds scaled by ``speed_scale`` and a more patient status-packet timeout (``bus_timeout_ms``).
Everything still passes the safety layer (:class:`Robot`): speed,
acceleration and tracking-window limits, the monitor's faults and the loop watchdog; a target leads the
joint by only ``lead_rad``, below the stall detector's window, so pushing on a stop is not a stall.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from handrail.calibration.errors import CalibrationError
from handrail.calibration.files import now_iso
from handrail.calibration.joint_plan import StopPhase, StopPlan, stop_plan_for
from handrail.calibration.joints_file import JointCalibrationEntry, JointsCalibration
from handrail.calibration.stop_search import (
    JointCalibrationConfig,
    StopContact,
    calibration_mode_profile,
    measure_stops,
    mjcf_stop_ranges,
)
from handrail.robot.profile import HandProfile
from handrail.robot.safe_robot import Robot

DirectionCheck = Literal["confirmed", "wrong", "unverified"]


@dataclass(frozen=True)
class JointResult:
    """One joint's calibration and how it was obtained."""

    joint: str
    zero_offset_rad: float
    direction: int  # the measured sign (written to the overlay)
    profile_direction: int
    direction_check: DirectionCheck
    method: Literal["two_stops", "one_stop"]
    contacts_rad: dict[int, float]  # side -> raw contact reading
    span_error_rad: float | None  # measured minus MJCF span (two stops only)


@dataclass(frozen=True)
class JointsCalibrationResult:
    """Every calibrated joint, plus the hand-wide one-stop correction used."""

    profile: str
    joints: tuple[JointResult, ...]
    one_stop_correction_rad: float
    duration_s: float = 0.0

    @property
    def wrong_directions(self) -> tuple[JointResult, ...]:
        return tuple(joint for joint in self.joints if joint.direction_check == "wrong")

    def offsets_rad(self) -> dict[str, float]:
        return {joint.joint: joint.zero_offset_rad for joint in self.joints}

    def to_file(self) -> JointsCalibration:
        return JointsCalibration(
            profile=self.profile,
            created=now_iso(),
            joints={
                joint.joint: JointCalibrationEntry(
                    zero_offset_rad=joint.zero_offset_rad,
                    direction=joint.direction,
                    direction_check=joint.direction_check,
                )
                for joint in self.joints
            },
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def format(self) -> str:
        lines = [f"joint calibration of {self.profile!r} ({len(self.joints)} joints, {self.duration_s:.1f} s)"]
        lines.append(
            f"  {'joint':12s} {'zero [deg]':>10s} {'dir':>4s}  {'method':9s} {'span err [deg]':>14s}  direction"
        )
        for joint in self.joints:
            span = "" if joint.span_error_rad is None else f"{np.degrees(joint.span_error_rad):+.2f}"
            check = {
                "confirmed": "confirmed",
                "unverified": "unverified (stops symmetric about zero)",
                "wrong": f"WRONG in the profile ({joint.profile_direction:+d}): measured {joint.direction:+d}",
            }[joint.direction_check]
            lines.append(
                f"  {joint.joint:12s} {np.degrees(joint.zero_offset_rad):+10.3f} {joint.direction:+4d}  "
                f"{joint.method:9s} {span:>14s}  {check}"
            )
        lines.append(
            f"  one-stop correction (half play + stop compliance): {np.degrees(self.one_stop_correction_rad):.3f} deg"
        )
        return "\n".join(lines)


# -- solving -----------------------------------------------------------------------------------------------


def solve_joint_calibration(
    profile: HandProfile,
    stops_rad: Mapping[str, tuple[float, float]],
    contacts: list[StopContact],
    config: JointCalibrationConfig,
    *,
    joints: tuple[str, ...] | None = None,
) -> JointsCalibrationResult:
    """Zero offsets and direction signs from stop contacts (see the module docstring). Pure.

    Raises:
        CalibrationError: a joint has no contact, its span does not match the MJCF (something else was
            hit), or neither direction gives a plausible offset; the message lists every such joint.
    """
    wanted = joints if joints is not None else profile.joint_names
    by_joint: dict[str, dict[int, float]] = {name: {} for name in wanted}
    for contact in contacts:
        if contact.joint in by_joint:
            by_joint[contact.joint][contact.side] = contact.position_rad
    problems = [f"{name}: no stop found" for name, found in by_joint.items() if not found]

    excess_half_spans = []
    for name, found in by_joint.items():
        if len(found) == 2:
            low, high = stops_rad[name]
            excess_half_spans.append(0.5 * ((found[1] - found[-1]) - (high - low)))
    correction_rad = max(0.0, statistics.median(excess_half_spans)) if excess_half_spans else 0.0

    results = []
    for name, found in by_joint.items():
        if not found:
            continue
        low, high = stops_rad[name]
        profile_direction = profile.joint(name).direction
        span_error = None
        if len(found) == 2:
            span_error = (found[1] - found[-1]) - (high - low)
            low_bound, high_bound = config.span_excess_bounds_rad
            if not low_bound <= span_error <= high_bound:
                problems.append(
                    f"{name}: stops {np.degrees(found[1] - found[-1]):.1f} deg apart, the MJCF says "
                    f"{np.degrees(high - low):.1f} deg — something other than a stop was hit (a finger, the object), "
                    "or the MJCF range is not the hardware's"
                )
                continue
            offset_as_profile = 0.5 * ((found[-1] - low) + (found[1] - high))
            offset_flipped = 0.5 * ((-found[-1] - high) + (-found[1] - low))
            method = "two_stops"
        else:
            ((side, reading),) = found.items()
            stop, opposite = (low, high) if side < 0 else (high, low)
            offset_as_profile = reading - stop - side * correction_rad
            offset_flipped = -reading - opposite + side * correction_rad
            method = "one_stop"
        plausible_as_profile = abs(offset_as_profile) <= config.max_offset_rad
        plausible_flipped = abs(offset_flipped) <= config.max_offset_rad
        if plausible_as_profile and not plausible_flipped:
            check, direction, offset = "confirmed", profile_direction, offset_as_profile
        elif plausible_flipped and not plausible_as_profile:
            check, direction, offset = "wrong", -profile_direction, offset_flipped
        elif plausible_as_profile:
            check, direction, offset = "unverified", profile_direction, offset_as_profile
        else:
            problems.append(
                f"{name}: the contacts fit neither direction (offset {np.degrees(offset_as_profile):+.1f} deg as the "
                f"profile says, {np.degrees(offset_flipped):+.1f} deg reversed; at most "
                f"{np.degrees(config.max_offset_rad):.1f} deg is plausible) — the joint was blocked short of its stop"
            )
            continue
        results.append(
            JointResult(name, float(offset), direction, profile_direction, check, method, dict(found), span_error)
        )
    if problems:
        raise CalibrationError("joint calibration failed:\n  " + "\n  ".join(problems))
    return JointsCalibrationResult(profile.name, tuple(results), correction_rad)


def calibrate_joints(
    profile: HandProfile,
    port: str | None = None,
    *,
    config: JointCalibrationConfig | None = None,
    plan: StopPlan | None = None,
    joints: tuple[str, ...] | None = None,
    on_phase: Callable[[StopPhase], None] | None = None,
) -> JointsCalibrationResult:
    """Calibrate ``joints`` (default: all) of the hand on ``port`` against their stops; nothing is written.

    ``profile`` is the hand's profile as loaded (any overlay on it is ignored: the run starts from raw
    encoder angles). Raises CalibrationError (see :func:`solve_joint_calibration`) or SafetyFault.
    """
    config = config or JointCalibrationConfig()
    stops_rad = mjcf_stop_ranges(profile)
    plan = plan or stop_plan_for(profile)
    if joints is not None:
        unknown = set(joints) - set(profile.joint_names)
        if unknown:
            raise CalibrationError(
                f"no joints {sorted(unknown)} in profile {profile.name!r}; valid: {', '.join(profile.joint_names)}"
            )
        plan = plan.restricted_to(set(joints))
    started_s = time.monotonic()
    with Robot(calibration_mode_profile(profile, stops_rad, config), port, speed_scale=config.speed_scale) as robot:
        contacts = measure_stops(robot, plan, config, on_phase)
    result = solve_joint_calibration(profile, stops_rad, contacts, config, joints=joints)
    return JointsCalibrationResult(
        result.profile, result.joints, result.one_stop_correction_rad, time.monotonic() - started_s
    )
