"""Vision stage: cameras, randomized synthetic renders, the cube pose model and its fiducial baseline.

It hands the deploy loop an object pose (camera or hand frame) with a timestamp. Start at
:mod:`handrail.vision.camera`: the :class:`Camera` interface every source implements, the :class:`Frame`
(RGB uint8, host monotonic timestamp) and :class:`Intrinsics` it hands out, and the camera errors. The
sources: :class:`RealSenseCamera` (``realsense``), :class:`OpenCVCamera` (``opencv_camera``: USB cameras,
video files, image folders) and :class:`VirtualCamera` (``virtual_camera``: the MuJoCo scene at given
intrinsics and extrinsics). The baseline pose source is :class:`FiducialCubePoseEstimator` (``fiducial``),
reading the ArUco markers laid out in ``cube_markers``. Frames and poses follow OpenCV's camera convention
(x right, y down, z forward; see ``transforms``). The learned pose model is not built yet.

Modules import their heavy dependencies (pyrealsense2, MuJoCo) themselves; import the one you need.
"""
