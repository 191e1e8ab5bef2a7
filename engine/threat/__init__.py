"""The threat model: an autoencoder over log and network events, trained on normal rows, served by Triton."""

from engine.threat.features import ThreatFeatures
from engine.threat.scorer import OUTPUTS, ThreatScorer
from engine.threat.train import TrainResult, threat_config, train_threat

__all__ = ["OUTPUTS", "ThreatFeatures", "ThreatScorer", "TrainResult", "threat_config", "train_threat"]
