"""The assistant's answers: an editable CSV of ``intent,answer``, one row per intent.

Training copies the FAQ it is given into the version (with a plain-words default for every intent the FAQ
lacks), so a served version always has an answer for each intent it can name. Editing the version's
``faq.csv`` and reloading the model changes the answers without retraining.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.errors import DataFileError

__all__ = ["HANDOVER", "default_answer", "read_faq", "write_faq"]

FIELDS = ("intent", "answer")
#: What an escalated question is answered with: the person who takes over gives the answer.
HANDOVER = "I am passing your question to a colleague, who will get back to you shortly."


def default_answer(intent: str) -> str:
    """The answer of an intent the FAQ lacks: the intent in plain words, and a person to follow up.

    >>> default_answer("card_arrival")
    'Your question is about card arrival; a colleague will follow up with the details.'
    """
    words = " ".join(intent.replace("_", " ").replace("-", " ").split()) or intent
    return f"Your question is about {words}; a colleague will follow up with the details."


def read_faq(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{intent: answer}`` of a CSV with the columns ``intent`` and ``answer`` (other columns are ignored)."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in FIELDS if c not in (reader.fieldnames or [])]
            if missing:
                msg = f"{p}: the FAQ needs the columns intent and answer; {' and '.join(missing)} missing"
                raise DataFileError(msg)
            faq = {}
            for row in reader:
                intent, answer = (row["intent"] or "").strip(), (row["answer"] or "").strip()
                if intent and answer:
                    faq[intent] = answer
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        msg = f"{p}: cannot be read as a UTF-8 CSV FAQ ({type(exc).__name__})"
        raise DataFileError(msg) from None
    return faq


def write_faq(intents: Sequence[str], faq: Mapping[str, str], path: Path) -> list[str]:
    """Write an answer for each of ``intents`` (``faq``'s, else :func:`default_answer`); the intents that
    got the default."""
    defaulted = [i for i in intents if i not in faq]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        writer.writerows((i, faq.get(i) or default_answer(i)) for i in intents)
    return defaulted
