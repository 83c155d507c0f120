"""The training engine: one loop for every method and for fine-tuning."""

from .combine import GradientCombiner, WeightedSum
from .config import TrainConfig
from .loop import TrainResult, train

__all__ = ["GradientCombiner", "WeightedSum", "TrainConfig", "TrainResult", "train"]
