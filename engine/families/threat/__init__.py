"""The threat model: an autoencoder over log and network events, trained on normal rows, served by Triton."""

from engine.families.threat.features import ThreatFeatures
from engine.families.threat.scorer import OUTPUTS, ThreatScorer
from engine.families.threat.train import ThreatTrainResult, threat_config, train_threat

__all__ = ["OUTPUTS", "ThreatFeatures", "ThreatScorer", "ThreatTrainResult", "threat_config", "train_threat"]
