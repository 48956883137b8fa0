"""Calibration stage: measure the real hand and cameras, and write files that overlay the nominal models.

Entry points (one per ``handrail calibrate`` command): :mod:`~handrail.calibration.intrinsics` (camera K and
distortion from board views), :mod:`~handrail.calibration.extrinsics` (``T_hand_camera`` from a board on the
hand, or hand-eye calibration with a marker carried by a finger). The boards live in
:mod:`~handrail.calibration.board`; the versioned files (camera, extrinsics) in
:mod:`~handrail.calibration.files`; :mod:`~handrail.calibration.virtual_board` renders boards in MuJoCo for
tests and dry runs. It hands the vision stage intrinsics and extrinsics, and the robot stage
a joints overlay for the hand profile.
"""
