"""The churn model: training, scoring, reason codes and retention actions."""

from engine.churn.scorer import OUTPUTS, ChurnScorer
from engine.churn.train import TrainResult, churn_config, train_churn

__all__ = ["OUTPUTS", "ChurnScorer", "TrainResult", "churn_config", "train_churn"]
