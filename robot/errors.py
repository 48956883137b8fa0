"""Typed errors of the robot stage (bus, control tables, virtual hand).

Messages name the thing, the value and the fix, e.g.
``motor 7 (index_pip): no status packet within 20 ms — check the cable and the id``.
"""

from handrail.errors import HandrailError


class RobotError(HandrailError):
    """Base class of every error the robot stage raises on purpose."""


class ControlTableError(RobotError):
    """A Dynamixel control table could not be found, parsed, or looked up."""


class BusError(RobotError):
    """A Dynamixel bus (real or virtual) could not carry out a transaction."""


class ProfileError(RobotError):
    """A hand profile or its calibration overlay is missing, malformed, or inconsistent."""


class PortError(BusError):
    """The serial port cannot be opened or configured."""


class MotorMissingError(BusError):
    """A motor of the profile did not answer a ping, or is of the wrong model."""


class BusTimeoutError(BusError):
    """No (complete) status packet arrived in time: cable, power, id or baud problem."""


class BusCorruptError(BusError):
    """A status packet arrived with a bad CRC or malformed: noise or a failing cable."""


class HardwareFault(BusError):
    """A servo reported a hardware error (overload, overheating, ...) and shut its torque off."""

    def __init__(self, message: str, motor_id: int, joint: str, error_bits: tuple[str, ...]):
        super().__init__(message)
        self.motor_id = motor_id
        self.joint = joint
        self.error_bits = error_bits


class BusWatchdogTripped(BusError):
    """A servo's own bus watchdog fired (the host was silent too long): it holds and ignores goals until cleared."""

    def __init__(self, message: str, motor_ids: tuple[int, ...]):
        super().__init__(message)
        self.motor_ids = motor_ids


class StallError(BusError):
    """A joint does not move although its servo pushes at its current limit: stuck or blocked."""

    def __init__(self, message: str, motor_id: int, joint: str):
        super().__init__(message)
        self.motor_id = motor_id
        self.joint = joint
