"""Calibration stage: camera intrinsics/extrinsics, joint offsets, dynamics identification, and the
sim-vs-real comparison of rollout logs. It hands the sim and deploy stages calibration files that overlay
the hand profile. Not built yet.
"""
