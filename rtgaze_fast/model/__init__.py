"""The RTGaze model (reference PyTorch; the renderer's backend is selectable)."""
from .configs import CONFIGS, DEFAULT_CONFIG, RTGazeConfig
from .rtgaze import STAGES, RTGaze

__all__ = ["RTGaze", "RTGazeConfig", "CONFIGS", "DEFAULT_CONFIG", "STAGES"]
