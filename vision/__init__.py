"""Vision stage: cameras, randomized synthetic renders, the cube pose model and its fiducial baseline.

It hands the deploy loop an object pose (camera or hand frame) with a timestamp. Not built yet.
"""
