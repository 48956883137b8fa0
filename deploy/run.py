"""One deployment: a checked policy, the hand behind the safety layer, a pose source and a rollout log.

:func:`run_deploy` is what ``handrail deploy`` and ``handrail demo`` call. It refuses a policy built for
another hand before it touches the bus, writes the log header (profile, calibration, policy fingerprint
and metadata, limits, versions), runs :class:`~handrail.deploy.loop.ControlLoop` and always closes the
robot (torque off) and the log, whatever ends the run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from handrail.deploy.loop import EXIT_SAFE_STOP, ControlLoop, LoopConfig, LoopResult
from handrail.deploy.pose_source import PoseSource
from handrail.deploy.rollout_log import FAULT, SAFE_STOP, LogHeader, RolloutLogWriter
from handrail.deploy.runtime import PolicyRuntime
from handrail.robot.errors import RobotError
from handrail.robot.profile import HandProfile
from handrail.robot.safe_robot import Robot


@dataclass(frozen=True)
class DeployOutcome:
    """How a deployment ended, and where its log is."""

    result: LoopResult
    log_path: Path
    warnings: tuple[str, ...]


def default_log_path(out_dir: Path) -> Path:
    """``out_dir/rollout_<UTC time>.mcap``."""
    return out_dir / f"rollout_{datetime.now(UTC).strftime('%Y%m%dT%H%M%S_%fZ')}.mcap"


def run_deploy(
    policy_path: str | Path,
    profile: HandProfile,
    port: str,
    pose_source: PoseSource,
    *,
    config: LoopConfig | None = None,
    out_dir: str | Path = "out",
    log_path: str | Path | None = None,
    speed_scale: float = 1.0,
    extra: dict[str, Any] | None = None,
    status_stream: TextIO | None = None,
) -> DeployOutcome:
    """Check ``policy_path`` against ``profile``, then run it on the hand at ``port`` (see the module docstring)."""
    runtime = PolicyRuntime(policy_path, profile)
    stream = status_stream if status_stream is not None else sys.stderr
    for warning in runtime.warnings:
        print(f"handrail: warning: {warning}", file=stream)
    path = Path(log_path) if log_path is not None else default_log_path(Path(out_dir))
    robot = Robot(profile, port, speed_scale=speed_scale)
    with RolloutLogWriter(path) as log:
        log.write_header(
            LogHeader.for_run(
                profile,
                policy_path=policy_path,
                policy_metadata=runtime.metadata.model_dump(mode="json"),
                limits=robot.limits,
                extra={"pose_source": pose_source.name, "port": port, "speed_scale": speed_scale, **(extra or {})},
            )
        )
        try:
            robot.start()
        except RobotError as error:
            log.write_event(FAULT, f"the hand did not start: {error}")
            log.write_event(SAFE_STOP, "start failed")
            robot.close()
            result = LoopResult(exit_code=EXIT_SAFE_STOP, stop_reason=f"the hand did not start: {error}")
            return DeployOutcome(result, path, runtime.warnings)
        try:
            loop = ControlLoop(runtime, robot, pose_source, log, config, status_stream=stream)
            result = loop.run()
        finally:
            robot.close()
            pose_source.close()
    return DeployOutcome(result, path, runtime.warnings)
