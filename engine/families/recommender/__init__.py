"""The investment recommender: collaborative and content-based, suitability-safe, retrieved through faiss."""

from engine.families.recommender.rules import DEFAULT_RULES, Rules
from engine.families.recommender.scorer import OUTPUTS, RecommenderScorer
from engine.families.recommender.train import RecommenderTrainResult, train_recommender

__all__ = ["DEFAULT_RULES", "OUTPUTS", "RecommenderScorer", "RecommenderTrainResult", "Rules", "train_recommender"]
