"""`make run`'s job end to end: churn, threat, fraud, the recommender, propensity, segments and the assistant
trained, served by one Triton, scored, scanned, authorized, recommended, segmented, planned, asked, stopped. One
run; each test reads its own part of what it printed."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.demo.job import run_demo
from engine.families.recommender.scorer import REASONS


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """What the demo printed, and its folder (``demo/``, ``repo/``, ``home/``: its own audit log, counted below)."""
    folder = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setenv("FINSCORE_HOME", str(folder / "home"))
        run_demo(rows=1500, workdir=folder / "demo", repo=folder / "repo")
    yield printed.getvalue(), folder


def test_demo_scores_customers_and_scans_the_log(demo: tuple[str, Path]) -> None:
    out, folder = demo
    assert "scored 8 customers over gRPC (encoded here: one feature tensor each to churn_features)" in out
    assert "Triton stopped." in out
    assert re.findall(r"^(\d+)\. ", out, re.M) == [str(i) for i in range(1, 18)]  # every step, in order
    caught = re.search(r"alerts name (\d+) addresses: (\d+) of the (\d+) attackers", out)
    assert caught is not None
    named, hit, attackers = map(int, caught.groups())
    assert hit >= attackers / 2 and hit <= named
    alerts = [json.loads(line) for line in (folder / "demo" / "alerts.jsonl").read_text().splitlines()]
    assert len({a["source"]["ip"] for a in alerts}) == named
    assert sorted(p.name for p in (folder / "repo").iterdir()) == [
        "assistant",
        "churn",
        "churn_features",
        "face_detect",
        "face_embed",
        "face_verify",
        "fraud",
        "propensity",
        "recommender",
        "segments",
        "threat",
        "threat_features",
    ]
    fraud = re.search(r"scored 4 card authorizations.*?\n\n(.*?)\n   demo-3", out, re.S)
    assert fraud is not None
    decisions = {line.split()[0]: line.split()[3] for line in fraud.group(1).splitlines()[2:]}
    assert decisions["demo-3"] in {"review", "decline"} and decisions["demo-1"] == "approve"
    audit = re.search(r"17\. audit log .*?: ([\d,]+) lines \((.*?)\).*audit log OK", out)
    assert audit is not None, out[-600:]
    counts = {e: int(n.replace(",", "")) for n, e in (part.split() for part in audit.group(2).split(", "))}
    assert counts["decision"] >= 1500 and counts["model_load"] >= 5 and counts["run"] == 2
    assert "; 0 of them name a customer by id" in out


def test_demo_recommends_to_known_and_new_investors(demo: tuple[str, Path]) -> None:
    """The held-out NDCG@10 of the recommender's training, then a table of up to 3 products, best first, for each
    of 2 investors with holdings and 1 new investor with a profile only, served over gRPC."""
    out, _ = demo
    ndcg = re.search(
        r"trained recommender version 1 on [\d,]+ generated holdings of 1,500 investors in 2,000 products: "
        r"held-out NDCG@10 (0\.\d+)",
        out,
    )
    assert ndcg is not None and float(ndcg.group(1)) > 0.03  # a random top 10 of 2,000 products: about 0.005
    part = re.search(
        r"9\. recommended 3 products each over gRPC to 2 investors with holdings and 1 new investor who has only a "
        r"profile \(.*?\).*?\n\n(.*?)\n\n10\. segmented",
        out,
        re.S,
    )
    assert part is not None, out[-2000:]
    lines = part.group(1).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["customer", "rank", "product", "score", "reason"]
    by_customer: dict[str, list[list[str]]] = {}
    for line in lines[2:]:
        customer, *rest = re.split(r"\s{2,}", line.strip())
        by_customer.setdefault(customer, []).append(rest)
    assert len(by_customer) == 3 and list(by_customer)[-1] == "new (profile only)"
    for recs in by_customer.values():
        assert [r[0] for r in recs] == [str(i) for i in range(1, len(recs) + 1)] and 1 <= len(recs) <= 3
        assert all(r[1].startswith("P") and r[3] in REASONS.values() for r in recs)
        scores = [float(r[2]) for r in recs]
        assert scores == sorted(scores, reverse=True)


def test_demo_segments_customers_and_plans_a_campaign(demo: tuple[str, Path]) -> None:
    """The segments table, 4 customers segmented over gRPC with the names the table gives their ids, and a campaign
    that contacts no one without consent and beats random contact within the same budget."""
    out, _ = demo
    part = re.search(r"10\. segmented 1,500 customers; (\d) segments.*?\n\n(.*?)\n\n", out, re.S)
    assert part is not None, out[-3000:]
    names = {}
    for line in part.group(2).splitlines()[2:]:
        seg, size, name = re.split(r"\s{2,}", line.strip())
        names[seg] = name
    assert len(names) == int(part.group(1)) >= 2 and len(set(names.values())) == len(names)
    served = re.search(r"4 customers segmented over gRPC:\n\n(.*?)\n\n11\.", out, re.S)
    assert served is not None
    for line in served.group(1).splitlines()[2:]:
        _, seg, name, _ = re.split(r"\s{2,}", line.strip())
        assert names[seg] == name
    consent = re.search(r"customers: 1,500, of whom ([\d,]+) consent to marketing \(([\d,]+) without consent", out)
    assert consent is not None
    assert sum(int(n.replace(",", "")) for n in consent.groups()) == 1500
    lift = re.search(r"plan vs random: \+[\d,.]+ expected value \(([\d.]+)× random's\)", out)
    assert lift is not None and float(lift.group(1)) > 1.0


def test_demo_answers_clear_questions_and_hands_a_vague_one_over(demo: tuple[str, Path]) -> None:
    from engine.demo.marketing_job import QUESTIONS

    out, _ = demo
    part = re.search(r"12\. asked the assistant 4 questions over gRPC.*?\n\n(.*?)\n\n13\. verified", out, re.S)
    assert part is not None, out[-2000:]
    rows = [re.split(r"\s{2,}", line.strip()) for line in part.group(1).splitlines()[2:]]
    assert [r[0] for r in rows] == list(QUESTIONS)
    verdicts = {r[0]: (r[1], r[3]) for r in rows}
    assert verdicts[QUESTIONS[0]] == ("lost_card", "answered")
    assert verdicts[QUESTIONS[1]] == ("card_arrival", "answered")
    assert verdicts[QUESTIONS[3]][1] == "escalated"


def test_demo_verifies_identifies_and_checks_a_document(demo: tuple[str, Path]) -> None:
    """The portrait and its mirrored crop match over gRPC and a photo without a face is refused in one sentence;
    the crop is found first among 10,000 people; the generated page's zone is read and its photo matches."""
    out, _ = demo
    verified = re.search(r"similarity ([\d.]+), threshold ([\d.]+): match \(\d+ ms\)", out)
    assert verified is not None, out[-3000:]
    assert float(verified.group(1)) >= float(verified.group(2))
    assert "a photo with no face: refused: model 'face_verify' rejected the request: input 'image_b': no face" in out
    ranked = re.search(r"identified the selfie among 10,000 enrolled people.*?\n\n(.*?)\n\n15\.", out, re.S)
    assert ranked is not None
    first = re.split(r"\s{2,}", ranked.group(1).splitlines()[2].strip())
    assert first[:2] == ["1", "C-0000001"]
    assert re.search(r"15\. checked a generated, degraded TD3 page.*?\n   valid: number ok", out, re.S)
    assert "the selfie matches its photo" in out
