"""Training RTGaze: the paper's losses and a small trainer."""
from .losses import PerceptualLoss, RandomFeatureNet, RTGazeLoss, depth_loss, reconstruction_loss
from .teacher import TriplaneTeacher
from .trainer import Trainer

__all__ = ["RTGazeLoss", "PerceptualLoss", "RandomFeatureNet", "reconstruction_loss", "depth_loss",
           "TriplaneTeacher", "Trainer"]
