"""``make run``'s marketing part: generated bank customers → propensity and segments → the segments served over
gRPC → a campaign planned under a budget (consent required) → the engagement assistant answering or escalating a
few questions over gRPC. Smaller than a real run: the customers ``make run`` generates, and an assistant fine-tuned
for one epoch on 400 generated questions (``finscore train assistant`` defaults to three)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.cli.common import text_table
from engine.demo.intents import write_intents
from engine.demo.marketing import CUSTOMER_ID, LABEL, NAME, write_marketing
from engine.families.assistant import train_assistant
from engine.families.propensity import train_propensity
from engine.families.segments import SegmentsTrainResult, train_segments
from engine.marketing import MessageTemplates, plan_campaign, read_offers
from engine.serving.repository import ModelRepository

__all__ = ["MarketingDemo", "marketing_demo", "train_marketing"]

#: The campaign's contact budget (offers cost 1.5 to 6 a contact).
BUDGET = 2_000.0
#: What the demo asks the assistant: three clear questions and a vague one, which goes to a person.
QUESTIONS = (
    "I lost my debit card yesterday, please block it",
    "my card still hasn't arrived after two weeks",
    "why was my payment at the restaurant declined?",
    "hello, something is wrong",
)
#: Fine-tuning epochs in the demo (``finscore train assistant`` defaults to 3).
DEMO_EPOCHS = 1


@dataclass(frozen=True)
class MarketingDemo:
    customers: Path
    offers: Path
    segments: SegmentsTrainResult


def train_marketing(workdir: Path, repository: ModelRepository, *, rows: int = 5000) -> MarketingDemo:
    """Write the generated customers and offers, then train propensity and segments on them."""
    customers, offers = write_marketing(workdir / "marketing", rows)
    p = train_propensity(customers, label=LABEL, id_column=CUSTOMER_ID, drop=[NAME], repo=repository)
    print(
        f"   trained propensity version {p.version} on {rows:,} generated bank customers (who subscribed): held-out "
        f"ROC-AUC {p.metrics.roc_auc:.3f}"
    )
    s = train_segments(customers, id_column=CUSTOMER_ID, drop=[LABEL, NAME], repo=repository)
    print(
        f"   trained segments version {s.version}: k = {len(s.segments)} chosen by silhouette "
        f"({s.metrics.silhouette:.3f}); pictures {', '.join(p.name for p in s.plots)} in {s.path}"
    )
    questions = write_intents(workdir / "intents", 40)
    a = train_assistant(
        questions["train"], test=questions["test"], faq=questions["faq"], repo=repository, epochs=DEMO_EPOCHS
    )
    m = a.metrics
    print(
        f"   trained assistant version {a.version} ({DEMO_EPOCHS} epoch: a small run) on {a.rows['train']:,} generated "
        f"questions over {len(a.intents)} intents: test accuracy {m.accuracy:.3f}; {m.answered_rate:.0%} answered at "
        f"confidence >= {m.threshold:.2f}, {m.answered_accuracy:.3f} of them right"
    )
    return MarketingDemo(customers, offers, s)


def marketing_demo(url: str, demo: MarketingDemo, repository: ModelRepository, *, step: int) -> None:
    """Segments over gRPC for a few customers, then a campaign planned in-process from the same versions."""
    from clients import ModelClient

    customers = pl.read_parquet(demo.customers)
    sizes = [(s.id, f"{s.size:,}", s.name) for s in demo.segments.segments]
    print(f"\n{step}. segmented {customers.height:,} customers; {len(sizes)} segments, named from their profiles:\n")
    print(text_table(sizes, ("segment", "customers", "name")))
    picked = customers.sample(4, seed=3)
    with ModelClient(url, "segments") as client:
        out = client.infer(picked.drop(LABEL, NAME))
    rows = [
        (cid, seg, name, ", ".join(r for r in reasons if r) or "-")
        for cid, seg, name, reasons in zip(
            picked.get_column(CUSTOMER_ID).to_list(),
            out["segment"],
            out["segment_name"],
            out["reason_codes"],
            strict=True,
        )
    ]
    print("\n   4 customers segmented over gRPC:\n")
    print(text_table(rows, ("customer", "segment", "segment_name", "reason_codes")))

    plan = plan_campaign(
        customers, read_offers(demo.offers), budget=BUDGET, templates=MessageTemplates.load(), repo=repository.root
    )
    print(
        f"\n{step + 1}. planned a campaign with {demo.offers.name} under a budget of {BUDGET:,.0f} "
        "(propensity × value − cost; consent required):"
    )
    for line in plan.lines():
        print(f"   {line}")
    top = plan.contacts.head(3).select(CUSTOMER_ID, "offer", "expected_value", "segment")
    print()
    print(text_table([(c, o, f"{v:.2f}", s) for c, o, v, s in top.iter_rows()], tuple(top.columns)))

    with ModelClient(url, "assistant", features=False) as client:
        answers = client.infer({"text": list(QUESTIONS)})
    print(
        f"\n{step + 2}. asked the assistant {len(QUESTIONS)} questions over gRPC (below its threshold, a person "
        "takes over):\n"
    )
    table = [
        (q, intent, f"{conf:.2f}", "escalated" if esc else "answered", answer)
        for q, intent, conf, esc, answer in zip(
            QUESTIONS, answers["intent"], answers["confidence"], answers["escalate"], answers["answer"], strict=True
        )
    ]
    print(text_table(table, ("question", "intent", "confidence", "", "answer")))
