"""Data: the ETH-XGaze HDF5 reader and the synthetic gaze dataset."""
from .ethxgaze import ETHXGazePairs, eye_mask

__all__ = ["ETHXGazePairs", "eye_mask"]
