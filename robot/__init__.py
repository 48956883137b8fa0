"""Robot stage: everything that touches (or pretends to be) the physical hand.

- :mod:`handrail.robot.profile`: the hand profile (joints in policy order, motor ids, limits, bus),
  loaded and validated from ``robot/profiles/*.toml``, plus the calibration overlay.

It hands the deploy stage a validated :class:`~handrail.robot.profile.HandProfile`; later the bus
driver, the safety layer and the virtual hand live here too. Nothing in this package imports torch.
"""
