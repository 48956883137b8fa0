"""Sim stage: the MuJoCo model of the hand and its scene, the randomized training environment, PPO, export.

- :mod:`handrail.sim.model`, :mod:`handrail.sim.render`: the scene (hand from the profile's MJCF, palm up,
  a 6 cm cube, fixed cameras) and headless renders.
- :mod:`handrail.sim.observation`, :mod:`handrail.sim.actions`: the one observation builder and action map,
  shared with the deploy loop (numpy only).
- :mod:`handrail.sim.randomization`: domain randomization ranges from ``sim/configs/randomization.toml``.
- :mod:`handrail.sim.batch_env` (N hands on ``mujoco.batch``, with :mod:`handrail.sim.command_wire` — what
  happens to a target on its way to the servo — and :mod:`handrail.sim.hand_setup` — torque cap, start pose),
  :mod:`handrail.sim.env` (Gymnasium, one hand), :mod:`handrail.sim.tasks` (pose, rotate-z).
- :mod:`handrail.sim.train` (PPO, Stable-Baselines3) with :mod:`handrail.sim.train_config` (hyperparameters,
  run options), :mod:`handrail.sim.vec_env` (SB3's VecEnv) and :mod:`handrail.sim.train_checkpoint`;
  :mod:`handrail.sim.checkpoint`,
  :mod:`handrail.sim.evaluate`, :mod:`handrail.sim.export` (ONNX policy files).
"""
