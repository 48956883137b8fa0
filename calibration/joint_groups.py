"""Which joints share identified dynamics parameters (and move together in an excitation)."""

from __future__ import annotations

from typing import Literal

from handrail.robot.profile import HandProfile

Grouping = Literal["joint", "type"]


def joint_groups(profile: HandProfile, by: Grouping = "type") -> dict[str, tuple[str, ...]]:
    """Joints that share parameters.

    ``"type"``: same kind of joint and load — a joint ``<finger>_<joint>`` joins group ``<joint>`` (all MCPs,
    all PIPs, ...), the ``thumb_*`` joints form group ``thumb``. ``"joint"``: every joint its own group
    (servos differ one by one: friction, damping and torque constant vary per unit).
    """
    if by == "joint":
        return {name: (name,) for name in profile.joint_names}
    groups: dict[str, list[str]] = {}
    for name in profile.joint_names:
        finger, _, joint = name.rpartition("_")
        group = "thumb" if finger == "thumb" else (joint or name)
        groups.setdefault(group, []).append(name)
    return {group: tuple(names) for group, names in groups.items()}
