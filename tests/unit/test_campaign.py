"""``finscore campaign plan``: the budget, each offer's capacity and the cap per customer hold; nobody without consent
is contacted (on generated tables too); the plan beats random contact within the same budget; messages fill in
from the templates and a bad template or offers file fails in one sentence; the command end to end."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import main
from engine.demo.tables import CHURN_ID
from engine.errors import DataFileError, ModelNotReadyError, UsageError
from engine.families.contract import ServedModel
from engine.families.propensity import PropensityScorer, PropensityTrainResult
from engine.marketing import MessageTemplates, Offer, consent_mask, plan_campaign, read_offers
from engine.marketing.campaign import NO_SEGMENT
from engine.marketing.selection import Candidates, Limits, limits_hold, random_plan, select, select_greedy
from engine.serving.config import TensorSpec
from engine.tables.io import read_table
from tests.conftest import request_arrays

OFFERS = [Offer("card", 120.0, 4.0, 300), Offer("loan", 300.0, 12.0, 80), Offer("savings", 60.0, 1.5)]
YES: tuple[str | None, ...] = ("true", "1", "yes", "y", "TRUE", " Yes ")
NO: tuple[str | None, ...] = ("false", "0", "no", "", None, "maybe", "n")


@pytest.fixture(autouse=True)
def no_default_models(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty default repository: `make run` trains propensity and segments into the source tree's model_repo/,
    whose models would otherwise score (or fail to score) these tables."""
    empty = tmp_path_factory.mktemp("empty-repo")
    monkeypatch.setattr("engine.serving.repository.DEFAULT_REPOSITORY", empty)
    monkeypatch.setenv("FINSCORE_REPO", str(empty))


def customers(n: int, *, seed: int = 0, segments: bool = True) -> pl.DataFrame:
    """A customer table with a propensity column per offer and consent written every which way."""
    rng = np.random.default_rng(seed)
    consent = [YES[i % len(YES)] if rng.random() < 0.6 else NO[i % len(NO)] for i in range(n)]
    cols: dict[str, object] = {
        "customer_id": [f"C{i:05d}" for i in rng.permutation(n)],
        "first_name": [f"Name{i}" for i in range(n)],
        "balance": rng.normal(1000, 300, n).round(2),
        "marketing_consent": consent,
    }
    for offer in OFFERS:
        cols[f"propensity_{offer.name}"] = rng.beta(1, 8, n)
    if segments:
        cols["segment_name"] = rng.choice(["young", "family", "senior"], n).tolist()
    return pl.DataFrame(cols)


def templates(tmp_path: Path, text: str) -> MessageTemplates:
    path = tmp_path / "templates.csv"
    path.write_text(text, encoding="utf-8")
    return MessageTemplates.load(path)


def consenting_ids(table: pl.DataFrame, column: str = "marketing_consent") -> set[object]:
    return set(table.filter(pl.Series(consent_mask(table, column))).get_column("customer_id").to_list())


def assert_limits(plan_contacts: pl.DataFrame, offers: list[Offer], budget: float, cap: int) -> None:
    assert plan_contacts.get_column("cost").sum() <= budget + 1e-6
    per_offer = dict(plan_contacts.group_by("offer").len().iter_rows())
    for offer in offers:
        assert offer.capacity is None or per_offer.get(offer.name, 0) <= offer.capacity
    assert (plan_contacts.group_by("customer_id").len().get_column("len") <= cap).all()
    assert plan_contacts.select("customer_id", "offer").is_unique().all()
    assert (plan_contacts.get_column("expected_value") > 0).all()


@pytest.mark.parametrize("cap", [1, 2])
def test_budget_capacity_and_caps_hold(cap: int) -> None:
    table = customers(3000)
    plan = plan_campaign(table, OFFERS, budget=2500.0, max_contacts_per_customer=cap)
    assert plan.contacts.height > 0
    assert_limits(plan.contacts, OFFERS, 2500.0, cap)
    assert plan.totals.contacts == plan.contacts.height
    assert plan.totals.expected_value == pytest.approx(plan.contacts.get_column("expected_value").sum())
    # The loan's capacity binds: its contacts are worth the most per customer.
    assert plan.contacts.filter(pl.col("offer") == "loan").height == 80


def test_nobody_without_consent_is_contacted() -> None:
    table = customers(2000)
    # An unlimited budget: every consenting customer worth a contact is contacted, and nobody else.
    plan = plan_campaign(table, OFFERS, budget=1e9, max_contacts_per_customer=3)
    contacted = set(plan.contacts.get_column("customer_id").to_list())
    assert contacted <= consenting_ids(table)
    assert len(contacted) > 0.5 * len(consenting_ids(table))
    assert plan.consenting == len(consenting_ids(table))


def test_consent_values() -> None:
    table = pl.DataFrame({"c": list(YES) + list(NO)})
    assert consent_mask(table, "c").tolist() == [True] * len(YES) + [False] * len(NO)
    assert consent_mask(pl.DataFrame({"c": [True, False, None]}), "c").tolist() == [True, False, False]
    assert consent_mask(pl.DataFrame({"c": [1, 0, None, 2]}), "c").tolist() == [True, False, False, False]


def test_no_consent_column_no_contact() -> None:
    sentence = "no consent column 'marketing_consent'.*no consent information, no contact"
    with pytest.raises(DataFileError, match=sentence):
        plan_campaign(customers(50).drop("marketing_consent"), OFFERS, budget=100.0)


consent_cells = st.sampled_from([*YES, *NO, "yes please", "ja"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    consent=st.lists(consent_cells, min_size=1, max_size=40),
    seed=st.integers(0, 2**16),
    budget=st.floats(0.5, 400.0),
    cap=st.integers(1, 3),
    method=st.sampled_from(["lp", "greedy"]),
)
def test_no_consent_no_contact_on_generated_tables(
    consent: list[str | None], seed: int, budget: float, cap: int, method: str
) -> None:
    rng = np.random.default_rng(seed)
    n = len(consent)
    table = pl.DataFrame(
        {
            "customer_id": list(range(n)),
            "first_name": ["x"] * n,
            "marketing_consent": pl.Series(consent, dtype=pl.String),
            **{f"propensity_{o.name}": rng.random(n) for o in OFFERS},
        }
    )
    offers = [Offer(o.name, o.value, o.cost, int(rng.integers(0, 5))) for o in OFFERS]
    plan = plan_campaign(table, offers, budget=budget, max_contacts_per_customer=cap, method=method)  # type: ignore[arg-type]
    allowed = {i for i, c in enumerate(consent) if c is not None and c.strip().lower() in {"true", "1", "yes", "y"}}
    assert set(plan.contacts.get_column("customer_id").to_list()) <= allowed
    assert_limits(plan.contacts, offers, budget, cap)


def test_plan_beats_random_contact() -> None:
    table = customers(5000, seed=3)
    plan = plan_campaign(table, OFFERS, budget=3000.0, random_draws=5, seed=1)
    assert plan.random.cost <= 3000.0 + 1e-6
    assert plan.totals.expected_value > plan.random.expected_value > 0
    assert plan.lift is not None and plan.lift > 1
    lines = "\n".join(plan.lines())
    assert "plan vs random" in lines and "Name" not in lines  # counts and sums, no customer's values


def limits_and_candidates(seed: int, n: int) -> tuple[Candidates, Limits]:
    rng = np.random.default_rng(seed)
    p = rng.random((n, 3))
    p[rng.random((n, 3)) < 0.2] = np.nan
    c = Candidates.build(p, rng.uniform(1, 30, 3), rng.uniform(0, 10, 3), rng.random(n) < 0.8)
    capacity = [int(rng.integers(0, n)) if rng.random() < 0.6 else None for _ in range(3)]
    return c, Limits(float(rng.uniform(1, 40)), capacity, int(rng.integers(1, 3)))


@pytest.mark.parametrize("seed", range(8))
def test_lp_plan_holds_limits_and_beats_greedy_and_random(seed: int) -> None:
    c, limits = limits_and_candidates(seed, 300)
    lp = select(c, limits, method="lp")
    greedy = select_greedy(c, limits)
    assert limits_hold(c, lp.chosen, limits) and limits_hold(c, greedy, limits)
    value = c.expected_value[lp.chosen].sum()
    assert value >= c.expected_value[greedy].sum()
    assert lp.bound is not None and value <= lp.bound + 1e-6
    rng = np.random.default_rng(seed)
    for _ in range(5):
        drawn = random_plan(c, limits, rng)
        assert limits_hold(c, drawn, limits)
        assert value >= c.expected_value[drawn].sum()


@pytest.mark.parametrize("seed", range(6))
def test_lp_plan_against_every_plan_of_a_tiny_problem(seed: int) -> None:
    c, limits = limits_and_candidates(seed, 4)
    k = len(c)
    best = max(
        c.expected_value[list(s)].sum()
        for r in range(k + 1)
        for s in itertools.combinations(range(k), r)
        if limits_hold(c, np.asarray(s, dtype=np.int64), limits)
    )
    lp = select(c, limits)
    assert lp.bound is not None and best <= lp.bound + 1e-6
    assert c.expected_value[lp.chosen].sum() == pytest.approx(best)


def test_plan_is_deterministic_and_ordered() -> None:
    table = customers(1500, seed=5)
    first = plan_campaign(table, OFFERS, budget=1200.0)
    again = plan_campaign(table.sample(fraction=1.0, shuffle=True, seed=9), OFFERS, budget=1200.0)
    assert first.contacts.equals(again.contacts)
    ev = first.contacts.get_column("expected_value").to_numpy()
    assert (np.diff(ev) <= 0).all()


def test_messages_fill_in_with_fallbacks(tmp_path: Path) -> None:
    t = templates(
        tmp_path,
        "segment,offer,template\n"
        'young,card,"Hi $first_name, a $offer for $segment people"\n'
        '*,card,"Dear ${first_name}: our $offer"\n'
        'senior,*,"Good day $first_name, about $offer"\n'
        '*,*,"Hello $first_name, $offer ($$0 fee)"\n',
    )
    table = customers(2000, seed=2)
    plan = plan_campaign(table, OFFERS, budget=1e9, max_contacts_per_customer=3, templates=t)
    names = dict(table.select("customer_id", "first_name").iter_rows())
    for cid, offer, segment, message in plan.contacts.select("customer_id", "offer", "segment", "message").iter_rows():
        name = names[cid]
        if (segment, offer) == ("young", "card"):
            assert message == f"Hi {name}, a card for young people"
        elif offer == "card":
            assert message == f"Dear {name}: our card"
        elif segment == "senior":
            assert message == f"Good day {name}, about {offer}"
        else:
            assert message == f"Hello {name}, {offer} ($0 fee)"


def test_default_templates_and_no_segment() -> None:
    plan = plan_campaign(customers(300, segments=False), OFFERS, budget=200.0)
    assert set(plan.contacts.get_column("segment")) == {NO_SEGMENT}
    assert all(m.startswith("Hello Name") for m in plan.contacts.get_column("message"))


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ('segment,offer,template\n*,*,"Hi $first_nam"\n', r"line 2: the template names \$first_nam, which is not a"),
        ('segment,offer,template\n*,card,"Hi $first_name"\n', "no template serves offer 'loan'"),
        ("segment,offer,template\n*,*,costs 5$\n", "line 2: the template has a '\\$' that starts no name"),
        ("segment,offer,template\n*,*,a\n*,*,b\n", r"line 3: segment '\*', offer '\*' already has a template"),
        ("segment,offer,message\n*,*,a\n", "starts with the header segment,offer,template"),
    ],
)
def test_bad_templates_fail_in_one_sentence(tmp_path: Path, text: str, sentence: str) -> None:
    with pytest.raises(DataFileError, match=sentence) as err:
        plan_campaign(customers(100), OFFERS, budget=100.0, templates=templates(tmp_path, text))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("offer,value\ncard,10\n", "lacks the column 'cost'"),
        ("offer,value,cost\ncard,10,-1\n", "line 2: cost must be a number of at least 0, got '-1'"),
        ("offer,value,cost,capacity\ncard,10,1,2.5\n", "line 2: capacity must be a whole number"),
        ("offer,value,cost\ncard,10,1\ncard,5,1\n", "line 3: offer 'card' is listed twice"),
        ("offer,value,cost\n", "lists no offer"),
    ],
)
def test_bad_offers_files(tmp_path: Path, text: str, sentence: str) -> None:
    path = tmp_path / "offers.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError, match=sentence):
        read_offers(path)


def test_offers_file(tmp_path: Path) -> None:
    path = tmp_path / "offers.csv"
    path.write_text("offer,value,cost,capacity,model\ncard,120,4,300,\nloan,300,12,,loan_propensity\n")
    assert read_offers(path) == [Offer("card", 120.0, 4.0, 300), Offer("loan", 300.0, 12.0, None, "loan_propensity")]


def test_untrained_model_and_bad_budget(tmp_path: Path) -> None:
    table = customers(50).drop("propensity_card")
    with pytest.raises(ModelNotReadyError, match="model 'propensity' has no trained version"):
        plan_campaign(table, OFFERS, budget=100.0, repo=tmp_path)
    with pytest.raises(UsageError, match="--budget must be a number above 0"):
        plan_campaign(customers(50), OFFERS, budget=0.0)


def test_single_offer_takes_the_propensity_column() -> None:
    table = customers(400).rename({"propensity_card": "propensity"})
    plan = plan_campaign(table, OFFERS[:1], budget=150.0)
    assert plan.sources["card"] == "column propensity"
    assert plan.contacts.height > 0


def test_propensity_from_the_trained_model(
    propensity_trained: PropensityTrainResult, offer_customers_path: Path, tmp_path: Path
) -> None:
    """No propensity column: the latest ``propensity`` version scores the consenting customers in this process.
    (A repository of its own: the session's also holds a segments model, which this table could not feed.)"""
    shutil.copytree(propensity_trained.path.parent, tmp_path / "repo" / "propensity")
    table = read_table(offer_customers_path).head(400)
    consent = np.arange(table.height) % 3 != 0
    table = table.with_columns(marketing_consent=pl.Series(consent), first_name=pl.lit("Kim"))
    offers = [Offer("deposit", 200.0, 3.0, None)]
    plan = plan_campaign(table, offers, budget=1e6, id_column=CHURN_ID, repo=tmp_path / "repo", random_draws=1)
    assert plan.sources == {"deposit": "model propensity", "segment": "none"}
    scorer = PropensityScorer.load(propensity_trained.path)
    expected = scorer.score(request_arrays(scorer, table))["propensity"].reshape(-1)
    want = {
        cid: p for cid, p, ok in zip(table.get_column(CHURN_ID), expected, consent, strict=True) if ok and p * 200 > 3
    }
    got = dict(plan.contacts.select(CHURN_ID, "propensity").iter_rows())
    assert got.keys() == want.keys()
    assert np.allclose([got[k] for k in want], list(want.values()), atol=1e-6)


class FakeScorer:
    """A model that answers ``propensity`` (from ``balance``) or ``segment_name`` (from ``job``), and remembers
    how many rows it was asked about."""

    OUTPUTS = (TensorSpec("propensity", "FP32"), TensorSpec("segment_name", "BYTES"))
    seen: ClassVar[list[int]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def load(cls, version_dir: Path) -> FakeScorer:
        return cls(version_dir.parent.name)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("balance", "FP32"), TensorSpec("job", "BYTES")]

    def validate(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert set(columns) == {"balance", "job"} and columns["job"].dtype == object
        return {k: v.reshape(-1) for k, v in columns.items()}

    def score_rows(self, rows: dict[str, np.ndarray], *, outputs: list[str]) -> dict[str, np.ndarray]:
        FakeScorer.seen.append(len(rows["balance"]))
        if self.name == "segments":
            return {"segment_name": np.array([b"seg-" + j for j in rows["job"]], dtype=object)}
        return {"propensity": (rows["balance"] / 2000).clip(0, 1).astype(np.float32)}


def test_propensity_and_segments_from_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for model in ("propensity", "segments"):
        (tmp_path / model / "1").mkdir(parents=True)
        (tmp_path / model / "1" / "model.py").write_text("")
    monkeypatch.setattr(
        "engine.families.registry.served_model",
        lambda name, version_dir: (None, ServedModel(name, FakeScorer, "reason_codes")),  # type: ignore[arg-type]
    )
    FakeScorer.seen.clear()
    table = customers(500, segments=False).with_columns(job=pl.lit("clerk"))
    plan = plan_campaign(table.drop("propensity_card"), OFFERS, budget=300.0, repo=tmp_path)
    assert plan.sources["card"] == "model propensity" and plan.sources["loan"] == "column propensity_loan"
    assert plan.sources["segment"] == "model segments"
    # Only the consenting customers are scored; segments only for the contacted ones.
    assert FakeScorer.seen == [plan.consenting, len(set(plan.contacts.get_column("customer_id")))]
    assert set(plan.contacts.get_column("segment")) == {"seg-clerk"}
    cards = plan.contacts.filter(pl.col("offer") == "card")
    balance = dict(table.select("customer_id", "balance").iter_rows())
    assert cards.height > 0
    for cid, p in cards.select("customer_id", "propensity").iter_rows():
        assert p == pytest.approx(min(max(balance[cid] / 2000, 0), 1), abs=1e-6)
    with pytest.raises(DataFileError, match="missing column 'job' required by the model"):
        plan_campaign(table.drop("propensity_card", "job"), OFFERS, budget=300.0, repo=tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e", "f"],
            "first_name": ["Ann", "Bo", "Cy", "Di", "Ed", "Flo"],
            "marketing_consent": [True, True, False, True, None, True],
            "propensity_card": [0.5, 0.1, 0.9, 0.3, 0.9, 0.02],
            "propensity_loan": [0.2, 0.4, 0.9, 0.01, 0.9, 0.01],
        }
    )
    table.write_csv(tmp_path / "customers.csv")
    (tmp_path / "offers.csv").write_text("offer,value,cost,capacity\ncard,100,5,\nloan,200,10,1\n")
    out = tmp_path / "plan.csv"
    code, printed, err = run(
        capsys,
        "campaign",
        "plan",
        "--customers",
        str(tmp_path / "customers.csv"),
        "--offers",
        str(tmp_path / "offers.csv"),
        "--budget",
        "18",
        "--out",
        str(out),
    )
    assert code == 0, err
    written = pl.read_csv(out)
    assert written.columns == ["customer_id", "offer", "propensity", "expected_value", "cost", "segment", "message"]
    # b: a loan (70) is worth more than a card (5); a: a card (45), the loan's one place being b's; d: a card (25)
    # would cost 5 more than the 18 allow after 10 + 5; c and e, of the highest propensities, have no consent.
    assert written.select("customer_id", "offer").rows() == [("b", "loan"), ("a", "card")]
    assert written.get_column("expected_value").to_list() == pytest.approx([70.0, 45.0])
    assert written.get_column("message").to_list()[1].startswith("Hello Ann,")
    assert "plan:   2 contacts, cost 15.00 of 18.00, expected value 115.00" in printed
    assert "random:" in printed and "plan vs random" in printed
    assert "Ann" not in printed

    code, _, err = run(capsys, "campaign", "plan", "--customers", "x.csv", "--offers", "y.csv", "--budget", "0")
    assert code == 2 and err == "Error: --budget must be a number above 0, got 0\n"


def test_an_erased_customer_is_never_planned_and_contacts_are_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSCORE_HOME", str(tmp_path / "home"))
    table = pl.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "first_name": ["Ann", "Bo", "Cy"],
            "marketing_consent": [True, True, True],
            "propensity": [0.5, 0.9, 0.4],
        }
    )
    table.write_parquet(tmp_path / "customers.parquet")
    (tmp_path / "offers.csv").write_text("offer,value,cost\ncard,100,5\n")
    code, _, err = run(capsys, "forget", "b", "--repo", str(tmp_path / "repo"))
    assert code == 0, err
    argv = ["campaign", "plan", "--customers", str(tmp_path / "customers.parquet"), "--offers"]
    code, printed, err = run(
        capsys, *argv, str(tmp_path / "offers.csv"), "--budget", "100", "--out", str(tmp_path / "p.csv")
    )
    assert code == 0, err
    assert "1 customers erased with finscore forget: left out" in printed
    assert pl.read_csv(tmp_path / "p.csv").get_column("customer_id").to_list() == ["a", "c"]

    from engine.security.trail import Trail, subjects_of

    trail = Trail.from_env()
    lines = [json.loads(line) for line in trail.path.read_text().splitlines()]
    decisions = [x for x in lines if x["event"] == "decision" and x["model"] == "campaign"]
    pseudonyms = subjects_of(pl.Series(["a", "c"]), trail.pseudonym_key).to_list()
    assert [(x["subject"], x["decision"]) for x in decisions] == list(zip(pseudonyms, ["card", "card"], strict=True))
    assert [x["score"] for x in decisions] == pytest.approx([45.0, 35.0])
    assert '"a"' not in trail.path.read_text() and "Ann" not in trail.path.read_text()
    run_line = next(x for x in lines if x["event"] == "run" and x["command"] == "campaign")
    assert run_line["status"] == "written" and run_line["contacts"] == 2
