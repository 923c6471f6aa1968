"""Training: the one loop, label regimes, schedules and the checkpoint cache."""

from robustdiag.train.checkpoints import CheckpointStore
from robustdiag.train.labels import corrupt_labels
from robustdiag.train.loop import NonFiniteLossError, TrainResult, accuracy_and_loss, fit, predict_logits
from robustdiag.train.regime import Regime

__all__ = [
    "CheckpointStore",
    "NonFiniteLossError",
    "Regime",
    "TrainResult",
    "accuracy_and_loss",
    "corrupt_labels",
    "fit",
    "predict_logits",
]
