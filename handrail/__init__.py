"""handrail: take control policies trained in randomized MuJoCo onto a physical dexterous hand, safely.

The stages are subpackages mapped onto the repository's top-level folders:

- ``handrail.sim``         (``sim/``)         MJCF models, randomized environment, training, ONNX export
- ``handrail.deploy``      (``deploy/``)      policy runtime, control loop, rollout logs, the demo
- ``handrail.robot``       (``robot/``)       hand profiles, bus driver, safety layer, virtual hand
- ``handrail.vision``      (``vision/``)      cameras, synthetic renders, pose model, fiducial baseline
- ``handrail.calibration`` (``calibration/``) camera/joint/dynamics calibration, sim-vs-real comparison

The command line entry point is :func:`handrail.cli.main` (console script ``handrail``).
"""

from handrail.errors import HandrailError

__all__ = ["HandrailError", "__version__"]

__version__ = "0.1.0"
