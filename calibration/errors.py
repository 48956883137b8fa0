"""Typed errors of the calibration stage."""

from handrail.errors import HandrailError


class CalibrationError(HandrailError):
    """A calibration could not be computed: too few usable views, a degenerate motion, a failed fit."""


class BoardSpecError(CalibrationError):
    """A board specification string (``--board``) could not be parsed."""


class CalibrationFileError(CalibrationError):
    """A calibration file is missing, malformed, of an unknown schema version, or of the wrong kind."""
