"""Vision stage: cameras, randomized synthetic renders, the cube pose model and its fiducial baseline.

It hands the deploy loop an object pose (camera or hand frame) with a timestamp. Start at
:mod:`handrail.vision.camera`: the :class:`Camera` interface every source implements, the :class:`Frame`
(RGB uint8, host monotonic timestamp) and :class:`Intrinsics` it hands out, and the camera errors. The
sources: :class:`RealSenseCamera` (``realsense``), :class:`OpenCVCamera` (``opencv_camera``: USB cameras,
video files, image folders) and :class:`VirtualCamera` (``virtual_camera``: the MuJoCo scene at given
intrinsics and extrinsics). Frames and poses follow OpenCV's camera convention (x right, y down, z forward;
see ``transforms``).

Pose sources:

- the learned one, :class:`~handrail.vision.pose_estimator.PoseEstimator` (``pose_estimator``): runs the
  pose model file (ONNX, contract in ``pose_model_file``) with onnxruntime — no torch — on frames resampled
  into the model's **crop view** (``crop_view``: a fixed-intrinsics pinhole aimed at the palm from each
  camera's centre), and fuses several cameras in the hand frame, rejecting outliers;
- the baseline, :class:`FiducialCubePoseEstimator` (``fiducial``), reading the ArUco markers laid out in
  ``cube_markers``.

The learned model's pipeline: ``render_config`` (cameras, crop view, randomization ranges) -> ``synthetic``
(domain-randomized renders through the crop view, with labels) -> ``dataset`` (shards + manifest, parallel,
resumable; ``handrail vision render``) -> ``pose_model`` (the CNN, torch), ``pose_training`` and
``pose_checkpoint`` (``handrail vision train``) -> ``pose_export`` (ONNX + parity) -> ``pose_eval`` (CNN
beside the baseline on held-out seeds; ``handrail vision eval``). The committed model is
``vision/models/cube_pose.onnx`` (``pose_model_file.bundled_pose_model_path``), its record beside it.

Modules import their heavy dependencies (pyrealsense2, MuJoCo, torch) themselves; import the one you need.
"""
