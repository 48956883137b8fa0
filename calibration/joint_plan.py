"""Which joints go to which mechanical stop together, and where the other joints wait meanwhile.

A joint is calibrated against the stops of its MJCF range. Moving every joint to a stop at once would
drive fingers into each other, the palm or the object; moving them one by one takes minutes. A
:class:`StopPlan` is the middle way: a few :class:`StopPhase` s, each a pose for the hand (joints not
named stay at 0, the flat hand) and a set of joints pushed towards one side at the same time, chosen so
that nothing but the joint's own stop is in the way.

:data:`LEAP_STOP_PLAN` is the plan for the LEAP-class hand in ``sim/models/leap_hand.xml`` (checked in
its MuJoCo scene with the cube on the palm: every pushed joint ends on its stop). ``thumb_axl`` reaches
only its lower stop — its upper one lies behind the index finger and the palm — so it is calibrated from
one stop (see :mod:`handrail.calibration.joints`). :func:`stop_plan_for` falls back, for another hand, to
one phase per joint and side with the hand flat: slow, but it makes no assumption about the geometry.
Consecutive phases that start along the same waypoints go from one to the next without the flat hand
in between (the abduction phases and MCP flexion share "fingers up").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from handrail.robot.profile import HandProfile

Side = Literal[-1, 1]  # -1: the lower stop of the MJCF range, +1: the upper one


@dataclass(frozen=True)
class StopPhase:
    """Push ``push`` joints towards their stops (side -1/+1) from ``pose_rad``; reach it through ``via_rad``.

    Poses map profile joint names to joint angles [rad], in the frame of the uncalibrated profile (zero
    offsets 0); joints not named are at 0. Waypoints are visited in order on the way in and in reverse on
    the way out.
    """

    name: str
    push: Mapping[str, Side]
    pose_rad: Mapping[str, float] = field(default_factory=dict)
    via_rad: tuple[Mapping[str, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "push", MappingProxyType(dict(self.push)))
        object.__setattr__(self, "pose_rad", MappingProxyType(dict(self.pose_rad)))
        object.__setattr__(self, "via_rad", tuple(MappingProxyType(dict(pose)) for pose in self.via_rad))
        if not self.push:
            raise ValueError(f"stop phase {self.name!r} pushes no joint")
        if any(side not in (-1, 1) for side in self.push.values()):
            raise ValueError(f"stop phase {self.name!r}: a side is -1 (lower stop) or +1 (upper stop)")


@dataclass(frozen=True)
class StopPlan:
    """The phases of one hand, in the order they run."""

    phases: tuple[StopPhase, ...]

    def joint_names(self) -> set[str]:
        names: set[str] = set()
        for phase in self.phases:
            names |= set(phase.push) | set(phase.pose_rad)
            for pose in phase.via_rad:
                names |= set(pose)
        return names

    def sides_of(self, joint: str) -> set[int]:
        """The stops (-1, +1) that the plan pushes ``joint`` to."""
        return {phase.push[joint] for phase in self.phases if joint in phase.push}

    def restricted_to(self, joints: set[str]) -> StopPlan:
        """Only the phases that push one of ``joints``, pushing only those (the poses stay as they are)."""
        phases = []
        for phase in self.phases:
            push = {name: side for name, side in phase.push.items() if name in joints}
            if push:
                phases.append(StopPhase(phase.name, push, phase.pose_rad, phase.via_rad))
        return StopPlan(tuple(phases))


_FINGERS = ("index", "middle", "ring")
# Fingers straight up (MCP flexed): abduction then turns each finger about its own length, clear of the others.
_FINGERS_UP = {f"{finger}_mcp": 1.5 for finger in _FINGERS}
# For MCP flexion the fingers lean back over the palm: turned towards the ring side (away from the thumb)
# and bent backwards at PIP/DIP, so that they pass beside and above the object instead of into it.
_FINGERS_LEANING = {
    **_FINGERS_UP,
    **{f"{finger}_abd": -1.0 for finger in _FINGERS},
    **{f"{finger}_pip": -0.4 for finger in _FINGERS},
    **{f"{finger}_dip": -0.3 for finger in _FINGERS},
}

LEAP_STOP_PLAN = StopPlan(
    (
        StopPhase(
            "extension",
            {
                **{f"{finger}_{joint}": -1 for finger in _FINGERS for joint in ("mcp", "pip", "dip")},
                "thumb_cmc": -1,
                "thumb_axl": -1,
                "thumb_mcp": -1,
                "thumb_ip": -1,
            },
        ),
        StopPhase("pip_flexion", {f"{finger}_pip": 1 for finger in _FINGERS}),
        StopPhase("dip_flexion", {**{f"{finger}_dip": 1 for finger in _FINGERS}, "thumb_ip": 1}),
        # The thumb swung a little away from the palm: raised fully, its MCP link would rest on the palm.
        StopPhase("thumb_cmc_flexion", {"thumb_cmc": 1}, {"thumb_axl": -0.25}),
        StopPhase("abduction_low", {f"{finger}_abd": -1 for finger in _FINGERS}, {**_FINGERS_UP, "thumb_ip": -1.0}),
        StopPhase(
            "abduction_high_thumb_mcp",
            {**{f"{finger}_abd": 1 for finger in _FINGERS}, "thumb_mcp": 1},
            {**_FINGERS_UP, "thumb_ip": -1.0},
        ),
        StopPhase(
            "mcp_flexion",
            {f"{finger}_mcp": 1 for finger in _FINGERS},
            {**_FINGERS_LEANING, "thumb_ip": -1.0},
            ({**_FINGERS_UP, "thumb_ip": -1.0},),
        ),
    )
)


def stop_plan_for(profile: HandProfile) -> StopPlan:
    """:data:`LEAP_STOP_PLAN` for a hand with the LEAP joint names, else one phase per joint and side."""
    if set(profile.joint_names) == LEAP_STOP_PLAN.joint_names():
        return LEAP_STOP_PLAN
    phases = []
    for joint in profile.joint_names:
        for side, label in ((-1, "low"), (1, "high")):
            phases.append(StopPhase(f"{joint}_{label}", {joint: side}))
    return StopPlan(tuple(phases))
