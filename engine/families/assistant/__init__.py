"""The assistant: customer questions → intent, the FAQ's answer, confidence, or a hand-over to a person."""

from engine.families.assistant.scorer import OUTPUTS, AssistantScorer
from engine.families.assistant.train import AssistantTrainResult, IntentMetrics, assistant_config, train_assistant

__all__ = ["OUTPUTS", "AssistantScorer", "AssistantTrainResult", "IntentMetrics", "assistant_config", "train_assistant"]
