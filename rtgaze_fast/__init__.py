"""rtgaze-fast: RTGaze and EG3D-family triplane rendering with fused Triton, CUDA and C++ kernels."""
from .camera import RaySampler, camera_label, fov_to_intrinsics, frontal_camera, look_at_pose, rays_from_label
from .model import RTGaze
from .autotune import explain_backend
from .ops import available_backends
from .options import FFHQ_OPTIONS, RenderOptions, parse_options
from .reference.decoder import FullyConnectedLayer, OSGDecoder
from .renderer import ImportanceRenderer

__version__ = "0.1.0"

__all__ = [
    "ImportanceRenderer", "OSGDecoder", "RTGaze", "FullyConnectedLayer", "RaySampler", "available_backends", "explain_backend",
    "camera_label", "fov_to_intrinsics", "frontal_camera", "look_at_pose", "rays_from_label",
    "FFHQ_OPTIONS", "RenderOptions", "parse_options", "__version__",
]
