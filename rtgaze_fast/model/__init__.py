"""The RTGaze model (reference PyTorch; the renderer's backend is selectable)."""
from .configs import CONFIGS, RTGazeConfig
from .rtgaze import STAGES, RTGaze

__all__ = ["RTGaze", "RTGazeConfig", "CONFIGS", "STAGES"]
