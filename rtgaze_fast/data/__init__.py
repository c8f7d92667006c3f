"""Data: the ETH-XGaze reader (and files in its layout) and the synthetic gaze dataset."""
from .ethxgaze import (ETHXGazeImages, ETHXGazePairs, XGazeIndex, camera_from_head_pose, eye_mask,
                       eye_mask_from_head_pose, head_frame_gaze, head_pose_of_camera, split_files)

__all__ = ["ETHXGazePairs", "ETHXGazeImages", "XGazeIndex", "camera_from_head_pose", "eye_mask",
           "eye_mask_from_head_pose", "head_frame_gaze", "head_pose_of_camera", "split_files"]
