"""The churn model: training, scoring, reason codes and retention actions."""

from engine.families.churn.scorer import OUTPUTS, ChurnScorer
from engine.families.churn.train import ChurnTrainResult, churn_config, train_churn

__all__ = ["OUTPUTS", "ChurnScorer", "ChurnTrainResult", "churn_config", "train_churn"]
