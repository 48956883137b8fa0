"""handrail: take control policies trained in randomized MuJoCo onto a physical dexterous hand, safely.

The stages are subpackages mapped onto the repository's top-level folders:

- ``handrail.sim``         (``sim/``)         MJCF models, randomized environment, training, ONNX export
- ``handrail.deploy``      (``deploy/``)      policy runtime, control loop, rollout logs, the demo
- ``handrail.robot``       (``robot/``)       hand profiles, bus driver, safety layer, virtual hand
- ``handrail.vision``      (``vision/``)      cameras, synthetic renders, pose model, fiducial baseline
- ``handrail.calibration`` (``calibration/``) camera/joint/dynamics calibration, sim-vs-real comparison

The command line entry point is :func:`handrail.cli.main` (console script ``handrail``).
"""

from pathlib import Path as _Path

# In a source checkout (this file's parent folder holds handrail's pyproject.toml), the stages live beside
# this folder (robot/, sim/, ...): let `handrail.robot` resolve there too, so that code run from the
# checkout without the pyproject mapping (`python -m handrail` in the repo root) finds the same modules.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "robot" / "__init__.py").is_file():
    __path__.append(str(_checkout))

from handrail.errors import HandrailError  # noqa: E402

__all__ = ["HandrailError", "__version__"]

__version__ = "0.1.0"
