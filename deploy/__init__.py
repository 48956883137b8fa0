"""Deploy stage: the ONNX policy runtime, the fixed-rate control loop, rollout logs and the demo.

It consumes a policy file and a hand profile and drives a hand through the robot stage. It must never
import torch. Not built yet.
"""
