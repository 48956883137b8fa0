"""Calibration stage: measure the real hand and cameras, and write files that overlay the nominal models.

Entry points (one per ``handrail calibrate`` command, plus ``handrail compare``):

- :mod:`~handrail.calibration.intrinsics`: camera K and distortion from board views;
- :mod:`~handrail.calibration.extrinsics`: ``T_hand_camera`` from a board on the hand, or hand-eye
  calibration with a marker carried by a finger, which :mod:`~handrail.calibration.hand_eye_run` runs with the
  hand in the loop through the poses of :mod:`~handrail.calibration.hand_eye_plan`;
- :mod:`~handrail.calibration.joints`: zero offsets and direction signs against the joints' mechanical
  stops, in the order of :mod:`~handrail.calibration.joint_plan`;
- :mod:`~handrail.calibration.dynamics`: sim parameters fitted with ``mujoco.sysid`` to excitations logged
  by :mod:`~handrail.calibration.excitation`;
- :mod:`~handrail.calibration.compare`: a rollout log replayed in MuJoCo (:mod:`~handrail.calibration.replay`),
  nominal vs identified, with an HTML report.

The boards live in :mod:`~handrail.calibration.board`; the versioned files in
:mod:`~handrail.calibration.files` (camera, extrinsics), :mod:`~handrail.calibration.joints_file` and
:mod:`~handrail.calibration.dynamics_file`; :mod:`~handrail.calibration.virtual_board` renders boards in
MuJoCo for tests and dry runs, :mod:`~handrail.calibration.virtual_hand_camera` the virtual hand with a marker on a
finger. The stage hands the vision stage intrinsics and extrinsics, the robot stage
a joints overlay for the hand profile, and the sim stage identified dynamics (multipliers of the MJCF's
parameters, a command latency and gear play) with their fit error.
"""
