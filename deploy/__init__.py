"""Deploy stage: the ONNX policy runtime, the fixed-rate control loop, rollout logs and the demo.

It consumes a policy file and a hand profile and drives a hand through the robot stage. It never imports
torch. :mod:`~handrail.deploy.runtime` (the checked policy), :mod:`~handrail.deploy.loop` (the loop),
:mod:`~handrail.deploy.run` (one deployment), :mod:`~handrail.deploy.rollout_log` and its reader and summary
(MCAP logs), :mod:`~handrail.deploy.pose_source` (object pose sources) and
:mod:`~handrail.deploy.camera_pose` (the camera path on the virtual hand: pose CNN or ArUco baseline),
:mod:`~handrail.deploy.demo` (the main job), :mod:`~handrail.deploy.policy_file` and
:mod:`~handrail.deploy.policy_match` (the policy-file contract).
"""
