"""The assistant family as the contract declares it (registered in :mod:`engine.families.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.families.assistant.scorer import AssistantScorer
from engine.families.assistant.train import train_assistant
from engine.families.contract import Family, ServedModel

__all__ = ["FAMILY"]


def example(folder: Path) -> dict[str, Any]:
    """Generated bank questions over ten intents (a few dozen each), the intent head trained alone."""
    from engine.demo.intents import write_intents

    paths = write_intents(folder, 24, seed=3)
    return {"train": paths["train"], "test": paths["test"], "faq": paths["faq"], "label": "intent", "epochs": 0}


SUMMARY = "a fine-tuned sentence encoder on customer questions: intent, FAQ answer, or a hand-over to a person"
FAMILY = Family(
    "assistant",
    SUMMARY,
    train_assistant,
    (ServedModel("assistant", AssistantScorer, "alternatives"),),
    example,
)
