"""Faces in real photos and video: MTCNN detection (weights from the facenet-pytorch wheel), head
pose by PnP, ETH-XGaze normalisation and its inverse, gaze frames, paste-back, eye-contact video.

- ``GazeRedirector(model)(rgb, gaze="camera" | (pitch, yaw))``: one photo (``pipeline``);
- ``EyeContact(redirector).process(frame)``: frame by frame with tracking and smoothing, and
  ``eye_contact_video(src, dst, ...)`` for a file (``video``);
- ``geometry``: PnP, normalisation, gaze conversions, the model's camera label;
- ``mtcnn``: the detector; ``photo``: image files in, any mode, EXIF orientation.
"""
from .geometry import ETH_XGAZE_SPEC, FACE_MODEL, NormSpec, model_spec
from .mtcnn import FaceBackendMissing
from .photo import PhotoError, load_photo, save_photo
from .pipeline import Face, FaceAnalyzer, GazeRedirector, NoFaceError, RedirectResult, draw_debug

__all__ = ["ETH_XGAZE_SPEC", "FACE_MODEL", "NormSpec", "model_spec", "FaceBackendMissing", "PhotoError",
           "load_photo", "save_photo", "Face", "FaceAnalyzer", "GazeRedirector", "NoFaceError", "RedirectResult",
           "draw_debug", "EyeContact", "eye_contact_video"]


def __getattr__(name):
    if name in ("EyeContact", "eye_contact_video"):
        from . import video
        return getattr(video, name)
    raise AttributeError(name)
