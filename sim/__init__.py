"""Sim stage: the MuJoCo model of the hand and its scene.

- :mod:`handrail.sim.model`: builds the scene (hand from the profile's MJCF, palm up, a 6 cm cube with
  distinct faces, fixed cameras) and its home keyframe.
- :mod:`handrail.sim.render`: headless offscreen renders of every scene camera.

It hands the training stage a compiled ``mujoco.MjModel``; the randomized environment, training and ONNX
export build on it.
"""
