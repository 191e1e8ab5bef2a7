"""The customer segments model: clustering, plain-word names, ids stable across retrains, PNGs."""

from engine.families.segments.scorer import OUTPUTS, SegmentScorer
from engine.families.segments.train import Segment, SegmentsTrainResult, segments_config, train_segments

__all__ = ["OUTPUTS", "Segment", "SegmentScorer", "SegmentsTrainResult", "segments_config", "train_segments"]
