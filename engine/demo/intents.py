"""Generated customer questions for a bank's assistant: templates over ten intents, seeded.

Each intent has its own phrasings, filled with varied details and wrapped in greetings and courtesies; a
few questions in every file are vague ("I need help with my account") and carry an intent drawn at random,
as real logs do: they are what the assistant should learn to hand to a person. The FAQ answers every intent
but one, so training shows what happens to an intent without a written answer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["INTENTS", "VAGUE", "IntentSet", "intent_questions", "write_intents"]

CARDS = ("card", "debit card", "credit card", "new card", "replacement card", "visa card", "mastercard")
WHEN = ("two weeks ago", "last week", "ten days ago", "on monday", "a month ago", "yesterday")
AMOUNTS = ("20 euros", "£50", "$100", "200 pounds", "a small amount", "500 dollars")
PLACES = ("in a shop", "online", "at a restaurant", "abroad", "at the petrol station", "on amazon")

#: intent -> (phrasings with optional {card} {when} {amount} {place} slots, the FAQ's answer or None)
INTENTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "card_arrival": (
        (
            "my {card} has not arrived yet",
            "I ordered a {card} {when} and it still hasn't come",
            "when will my {card} be delivered",
            "how long does it take for the {card} to arrive in the post",
            "still waiting for my {card} to show up",
            "can you track the delivery of my {card}",
        ),
        "Cards arrive within 5 working days; after 10 days we send a new one free of charge.",
    ),
    "lost_card": (
        (
            "I lost my {card}",
            "my {card} was stolen {when}",
            "I can't find my {card} anywhere, please block it",
            "someone took my wallet with my {card} in it",
            "how do I freeze a {card} I have misplaced",
            "report a lost {card}",
        ),
        "Freeze the card in the app under Cards > Freeze, then order a replacement there.",
    ),
    "card_declined": (
        (
            "my {card} was declined {place}",
            "why did my payment {place} get refused",
            "the {card} keeps getting rejected {place}",
            "transaction declined when paying {amount} {place}",
            "my {card} doesn't work {place}",
            "payment of {amount} failed with my {card}",
        ),
        "A payment is declined for low balance, a frozen card or a spending limit; the app shows which.",
    ),
    "transfer_status": (
        (
            "my transfer of {amount} hasn't arrived",
            "I sent {amount} {when} and the recipient didn't get it",
            "how long does a bank transfer take",
            "where is the money I transferred {when}",
            "is my transfer of {amount} still pending",
            "the payee says the transfer never came",
        ),
        "Transfers in the same currency arrive within one working day; others take up to three.",
    ),
    "top_up": (
        (
            "how do I top up my account",
            "I want to add {amount} to my balance",
            "my top up of {amount} did not go through",
            "can I top up with my {card}",
            "top up failed {when}",
            "add money to my account by bank transfer",
        ),
        "Top up in the app under Add money, by card or by bank transfer to your account number.",
    ),
    "exchange_rate": (
        (
            "what exchange rate do you use",
            "why was I charged a bad rate when paying {place}",
            "what would {amount} be in a foreign currency",
            "the currency conversion on my payment {place} looks wrong",
            "do you add a fee on exchange rates",
            "which rate applies when I pay abroad",
        ),
        "We use the interbank rate on weekdays; a 0.5% mark-up applies at weekends.",
    ),
    "change_pin": (
        (
            "how do I change my PIN",
            "I forgot the PIN of my {card}",
            "can I reset the pin for my {card}",
            "my PIN is blocked after three wrong tries",
            "where can I see my pin code",
            "I want a new PIN number",
        ),
        "See or change your PIN in the app under Cards > Show PIN; a blocked PIN resets at any cash machine.",
    ),
    "close_account": (
        (
            "I want to close my account",
            "how do I delete my account",
            "please cancel my account and send me my balance",
            "terminate my membership",
            "I no longer want to bank with you",
            "close my account {when} and refund the rest",
        ),
        "Close the account in the app under Profile > Close account; move the balance out first.",
    ),
    "direct_debit": (
        (
            "a direct debit of {amount} was taken that I don't recognise",
            "how do I cancel a direct debit",
            "set up a direct debit for my bills",
            "why was my direct debit {when} refused",
            "stop the recurring payment of {amount}",
            "a standing order went out twice",
        ),
        "Direct debits are listed in the app under Payments; cancel one there or dispute it within 8 weeks.",
    ),
    "cash_withdrawal_fee": (
        (
            "why was I charged a fee for taking out cash",
            "I withdrew {amount} {place} and paid a fee",
            "how much does it cost to use an ATM",
            "is withdrawing cash with my {card} free",
            "cash machine fee on my statement",
            "extra charge on my ATM withdrawal {when}",
        ),
        None,  # no written answer: training gives it the plain-words default
    ),
}
VAGUE = (
    "I need help with my account",
    "something is wrong",
    "can you help me please",
    "I have a question",
    "it is not working",
    "hello is anyone there",
    "what should I do now",
    "I have a problem with my bank",
)
OPENERS = ("", "", "", "hi, ", "hello, ", "hey ", "good morning, ", "excuse me, ")
CLOSERS = ("", "", "", "?", " please", ", thanks", ". what can I do?", " - help!")


@dataclass(frozen=True)
class IntentSet:
    train: pl.DataFrame
    test: pl.DataFrame
    faq: dict[str, str]


def _question(rng: np.random.Generator, template: str) -> str:
    filled = template.format(
        card=rng.choice(CARDS), when=rng.choice(WHEN), amount=rng.choice(AMOUNTS), place=rng.choice(PLACES)
    )
    text = f"{rng.choice(OPENERS)}{filled}{rng.choice(CLOSERS)}"
    return text[0].upper() + text[1:]


def _rows(rng: np.random.Generator, per_intent: int, vague_share: float) -> pl.DataFrame:
    names = list(INTENTS)
    texts, labels = [], []
    for intent, (templates, _) in INTENTS.items():
        for _ in range(per_intent):
            texts.append(_question(rng, str(rng.choice(templates))))
            labels.append(intent)
    for _ in range(max(1, round(vague_share * len(texts)))):
        texts.append(_question(rng, str(rng.choice(VAGUE))))
        labels.append(str(rng.choice(names)))
    order = rng.permutation(len(texts))
    return pl.DataFrame({"text": [texts[i] for i in order], "intent": [labels[i] for i in order]})


def intent_questions(per_intent: int = 60, *, seed: int = 5, vague_share: float = 0.06) -> IntentSet:
    """``per_intent`` training questions per intent (and a quarter as many to test), plus vague ones."""
    rng = np.random.default_rng(seed)
    train = _rows(rng, per_intent, vague_share)
    test = _rows(rng, max(2, per_intent // 4), vague_share)
    faq = {intent: answer for intent, (_, answer) in INTENTS.items() if answer is not None}
    return IntentSet(train, test, faq)


def write_intents(folder: Path, per_intent: int = 60, *, seed: int = 5) -> dict[str, Path]:
    """Write ``train.csv``, ``test.csv`` (columns ``text``, ``intent``) and ``faq.csv`` into ``folder``."""
    data = intent_questions(per_intent, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"train": folder / "train.csv", "test": folder / "test.csv", "faq": folder / "faq.csv"}
    data.train.write_csv(paths["train"])
    data.test.write_csv(paths["test"])
    with paths["faq"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("intent", "answer"))
        writer.writerows(data.faq.items())
    return paths
