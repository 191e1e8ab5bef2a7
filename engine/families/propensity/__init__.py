"""The propensity model: how likely a customer is to take an offer, with the reasons, trained like churn."""

from engine.families.propensity.scorer import OUTPUTS, PropensityScorer
from engine.families.propensity.train import PropensityTrainResult, train_propensity

__all__ = ["OUTPUTS", "PropensityScorer", "PropensityTrainResult", "train_propensity"]
