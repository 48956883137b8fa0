"""Refusing a policy built for another hand: compare a policy file's metadata with a hand profile.

What is compared (:func:`policy_differences`, :func:`check_policy_matches`), decisions:

- *Refused* (:class:`PolicyMismatchError`, one message listing every difference): joint names and order
  (action spec vs profile), a control rate the hand does not allow (above its ``max_control_rate_hz``, or too
  slow for its tracking window: the loop runs a policy at the policy's own rate), the observation layout
  (vs :func:`default_spec` for the hand's
  joint count, the runtime's history and the policy's task size), a requested history other than the
  policy's, and any safety limit of any joint (vs ``SafetyLimits.from_profile(profile)`` at speed scale 1;
  ``--speed-scale`` tightens the filter at run time and is not part of the policy's meaning).
- *Warned only*: another profile name or fingerprint. The fingerprint also covers zero offsets,
  directions, motor ids and bus settings, which change with a recalibration or a re-wired hand without
  changing what the policy sees or may do; when everything above matches, a policy stays usable.
- Not compared: the action map's scale (read from the policy at run time, as in training) and
  ``max_pose_age_s`` (the runtime takes it from the policy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from handrail.deploy.policy_file import PolicyFileError, PolicyMetadata, read_policy
from handrail.robot.errors import ProfileError
from handrail.robot.profile import HandProfile
from handrail.robot.safety_limits import FIELD_NAMES as LIMIT_FIELDS
from handrail.robot.safety_limits import SafetyLimits
from handrail.sim.observation import ROTATE_Z_TASK_SIZE, TASK, default_spec, uses_object_pose

# Rates and limits read back from JSON are exact; this only absorbs arithmetic done differently on two sides.
VALUE_RTOL = 1e-9


class PolicyMismatchError(PolicyFileError):
    """A policy's metadata does not match the hand it is asked to drive; ``differences`` lists each in words."""

    def __init__(self, message: str, differences: Sequence[str]):
        super().__init__(message)
        self.differences = tuple(differences)


@dataclass(frozen=True)
class PolicyDifferences:
    """How a policy differs from a hand: ``problems`` refuse it, ``warnings`` do not."""

    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _joint_differences(policy_names: Sequence[str], hand_names: Sequence[str]) -> list[str]:
    problems: list[str] = []
    if len(policy_names) != len(hand_names):
        problems.append(f"the policy drives {len(policy_names)} joints, the hand has {len(hand_names)}")
    missing = [name for name in hand_names if name not in policy_names]
    extra = [name for name in policy_names if name not in hand_names]
    if missing:
        problems.append(f"joints of the hand the policy does not drive: {', '.join(missing)}")
    if extra:
        problems.append(f"joints the policy drives that the hand lacks: {', '.join(extra)}")
    hand_index = {name: index for index, name in enumerate(hand_names)}
    for index, name in enumerate(policy_names):
        if name in hand_index and hand_index[name] != index:
            problems.append(
                f"joint order: {name!r} is action {index} in the policy but joint {hand_index[name]} on the hand"
            )
    return problems


def _limit_differences(metadata: PolicyMetadata, profile: HandProfile) -> list[str]:
    """One line per quantity that differs, naming each joint and both values."""
    policy_limits, hand_limits = metadata.limits, SafetyLimits.from_profile(profile)
    hand_index = {name: index for index, name in enumerate(profile.joint_names)}
    problems: list[str] = []
    for quantity in LIMIT_FIELDS:
        policy_values, hand_values = getattr(policy_limits, quantity), getattr(hand_limits, quantity)
        joints = []
        for index, name in enumerate(metadata.joint_names):
            if name not in hand_index:
                continue  # reported with the joints
            policy_value, hand_value = float(policy_values[index]), float(hand_values[hand_index[name]])
            if not math.isclose(policy_value, hand_value, rel_tol=VALUE_RTOL, abs_tol=1e-12):
                joints.append(f"{name} {policy_value:.6g} in the policy vs {hand_value:.6g} on the hand")
        if joints:
            problems.append(f"safety limit {quantity} differs: {'; '.join(joints)}")
    return problems


def _rate_differences(metadata: PolicyMetadata, profile: HandProfile) -> list[str]:
    """The loop runs a policy at its own rate: refused where the hand does not allow that rate."""
    try:
        profile.at_rate(metadata.control_rate_hz)
    except ProfileError as error:
        return [f"control rate: the policy runs at {metadata.control_rate_hz:g} Hz — {error}"]
    return []


def _observation_differences(metadata: PolicyMetadata, profile: HandProfile, history: int) -> list[str]:
    policy_spec = metadata.observation
    task_size = policy_spec.size(TASK) if TASK in policy_spec.names else ROTATE_Z_TASK_SIZE
    hand_spec = default_spec(len(profile.joints), history, task_size, object_pose=uses_object_pose(policy_spec))
    differences = hand_spec.diff(policy_spec, this="the hand's observation", that="the policy's")
    return [f"observation: {difference}" for difference in differences]


def policy_differences(
    metadata: PolicyMetadata, profile: HandProfile, *, history: int | None = None
) -> PolicyDifferences:
    """Every way ``metadata`` differs from ``profile``, in words (see the module docstring for what refuses).

    ``history``: the observation history the runtime will build; ``None`` means the policy's own.
    """
    runtime_history = metadata.history if history is None else history
    problems = _joint_differences(metadata.joint_names, profile.joint_names)
    problems += _rate_differences(metadata, profile)
    if runtime_history != metadata.history:
        problems.append(
            f"history: the runtime builds {runtime_history} tick(s) of joint positions, the policy was trained on "
            f"{metadata.history}"
        )
    problems += _observation_differences(metadata, profile, runtime_history)
    problems += _limit_differences(metadata, profile)
    warnings: list[str] = []
    if metadata.profile_name != profile.name:
        warnings.append(f"trained for hand profile {metadata.profile_name!r}, driving {profile.name!r}")
    if metadata.profile_fingerprint != profile.fingerprint():
        warnings.append(
            f"profile fingerprint {metadata.profile_fingerprint} (training) differs from {profile.fingerprint()} "
            "(this hand): something outside joints, rate and limits changed — zero offsets, directions, motor "
            "ids, bus or servo settings (a recalibration does this), or the MJCF names (the same hand in another model)"
        )
    return PolicyDifferences(tuple(problems), tuple(warnings))


def check_policy_matches(
    metadata: PolicyMetadata,
    profile: HandProfile,
    *,
    history: int | None = None,
    source: str = "the policy",
) -> tuple[str, ...]:
    """Refuse a policy built for another hand; returns the warnings when it may drive ``profile``.

    Raises PolicyMismatchError with one message listing every difference (``source`` names the policy).
    """
    differences = policy_differences(metadata, profile, history=history)
    if differences.ok:
        return differences.warnings
    lines = [*differences.problems, *(f"(note) {warning}" for warning in differences.warnings)]
    count = len(differences.problems)
    message = (
        f"{source} does not match hand {profile.name!r} ({profile.source}); {count} difference"
        f"{'s' if count != 1 else ''}:\n  - "
        + "\n  - ".join(lines)
        + f"\nuse a policy trained for this hand, or give the profile the policy was trained for "
        f"({metadata.profile_name!r}, fingerprint {metadata.profile_fingerprint})"
    )
    raise PolicyMismatchError(message, differences.problems)


def check_policy_file(
    path: str | Path, profile: HandProfile, *, history: int | None = None
) -> tuple[PolicyMetadata, tuple[str, ...]]:
    """Read the policy file at ``path``; refuse it unless its graph fits its metadata and that fits ``profile``.

    Returns the metadata and the warnings (see :func:`check_policy_matches`). Raises PolicyFileError on an
    unreadable file or missing metadata, PolicyMismatchError listing every difference from the hand.
    """
    metadata, _ = read_policy(path)
    warnings = check_policy_matches(metadata, profile, history=history, source=f"policy {path}")
    return metadata, warnings
