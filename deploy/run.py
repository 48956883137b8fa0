"""One deployment: a checked policy, the hand behind the safety layer, a pose source and a rollout log.

:func:`run_deploy` is what ``handrail deploy`` and ``handrail demo`` call. It refuses a policy built for
another hand before it touches the bus, writes the log header (profile, calibration, policy fingerprint
and metadata, limits, versions), runs :class:`~handrail.deploy.loop.ControlLoop` and always closes the
robot (torque off) and the log, whatever ends the run.

Endings and their exit codes (``DeployOutcome.result.exit_code``): 0 time up or operator stop; 3
(:data:`~handrail.deploy.loop.EXIT_SAFE_STOP`) a safe stop — a safety fault, a non-finite policy output, or
any unexpected exception in the loop (an onnxruntime error, a bug: torque off first, then a FAULT and a
SAFE_STOP event with the exception); 4 (:data:`EXIT_NOT_STARTED`) the hand never started (no port, no
answer), so nothing moved and there is nothing to score.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from handrail.deploy.live_view import LiveView

from handrail.deploy.loop import EXIT_SAFE_STOP, ControlLoop, LoopConfig, LoopResult
from handrail.deploy.pose_source import PoseSource
from handrail.deploy.rollout_log import FAULT, SAFE_STOP, LogHeader, RolloutLogWriter
from handrail.deploy.runtime import PolicyRuntime
from handrail.robot.errors import RobotError
from handrail.robot.profile import HandProfile
from handrail.robot.safe_robot import UNEXPECTED_ERROR, Robot, SafeStopRecord
from handrail.robot.safety_monitor import OPERATOR_STOP

# The hand never started (the port would not open, no motor answered): distinct from a safe stop.
EXIT_NOT_STARTED = 4


@dataclass(frozen=True)
class DeployOutcome:
    """How a deployment ended, and where its log is."""

    result: LoopResult
    log_path: Path
    warnings: tuple[str, ...]
    started: bool = True  # False: the hand never started; result.stop_reason says why
    safe_stop: SafeStopRecord | None = None  # the first safe stop other than an operator stop, if any


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
    view: LiveView | None = None,
) -> DeployOutcome:
    """Check ``policy_path`` against ``profile``, then run it on the hand at ``port`` (see the module docstring).

    ``view``: a live view (:mod:`handrail.deploy.live_view`) that gets every message the log gets.
    """
    runtime = PolicyRuntime(policy_path, profile)
    # The hand runs the policy at the policy's own rate (checked against what the hand allows).
    profile = profile.at_rate(runtime.metadata.control_rate_hz)
    stream = status_stream if status_stream is not None else sys.stderr
    for warning in runtime.warnings:
        print(f"handrail: warning: {warning}", file=stream)
    path = Path(log_path) if log_path is not None else default_log_path(Path(out_dir))
    robot = Robot(profile, port, speed_scale=speed_scale)
    with RolloutLogWriter(path, tee=view.tee if view is not None else None) as log:
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
            result = LoopResult(exit_code=EXIT_NOT_STARTED, stop_reason=f"the hand did not start: {error}")
            return DeployOutcome(result, path, runtime.warnings, started=False)
        stops: list[SafeStopRecord] = []
        robot.on_safe_stop.append(stops.append)
        loop: ControlLoop | None = None
        try:
            loop = ControlLoop(runtime, robot, pose_source, log, config, status_stream=stream)
            result = loop.run()
        except Exception as error:  # not a safety fault (the loop handles those): a bug, an onnxruntime error
            record = robot.abort(error, "the control loop")  # torque off first
            result = loop.result if loop is not None else LoopResult()
            _log_unexpected_error(log, result, error, record, stream)
        finally:
            robot.close()
            pose_source.close()
    first_fault = next((record for record in stops if record.fault.kind != OPERATOR_STOP), None)
    return DeployOutcome(result, path, runtime.warnings, safe_stop=first_fault)


def _log_unexpected_error(
    log: RolloutLogWriter, result: LoopResult, error: Exception, record: SafeStopRecord, stream: TextIO
) -> None:
    """Record an exception that escaped the loop as a safe stop: the result, a FAULT and a SAFE_STOP event."""
    message = f"unexpected {type(error).__name__} in the control loop: {error}"
    result.exit_code = EXIT_SAFE_STOP
    result.stop_reason = message
    result.faults.append(message)
    trace = "".join(traceback.format_exception(error))
    log.write_event(FAULT, message, fault_kind=UNEXPECTED_ERROR, action=record.action, traceback=trace)
    log.write_event(SAFE_STOP, message)
    print(f"{trace}\nhandrail: safe stop (torque off): {message}", file=stream)
