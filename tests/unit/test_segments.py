"""The segments family on generated data with planted segments: k, names, stable ids, bad input, pictures."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.cli import main
from engine.demo.marketing import CUSTOMER_ID, LABEL, NAME, marketing_customers, marketing_offers
from engine.errors import DataFileError, InvalidInputError, UsageError
from engine.families.segments import SegmentScorer, SegmentsTrainResult, train_segments
from engine.families.segments.describe import column_words, segment_names
from engine.families.segments.ids import Previous, match_ids
from engine.families.segments.model import Assigner
from engine.families.segments.space import Profile, SegmentSpace
from engine.serving.repository import ModelRepository
from tests.conftest import request_arrays

#: Three planted groups: (age, balance, channel, job) around which customers are drawn.
PLANTED = {
    "young": (24, 400.0, "app", "student"),
    "older": (70, 60_000.0, "branch", "retired"),
    "mid": (45, 5_000.0, "web", "employee"),
}


def planted(rows_per_group: int = 90, *, seed: int = 0) -> pl.DataFrame:
    """Clearly separated customers: each group has its own age, balance, channel and job (plus a noise column)."""
    rng = np.random.default_rng(seed)
    parts = []
    for group, (age, balance, channel, job) in PLANTED.items():
        n = rows_per_group
        other = [c for c in ("app", "branch", "web") if c != channel]
        parts.append(
            pl.DataFrame(
                {
                    "group": [group] * n,
                    "age": rng.normal(age, 2.5, n).round(),
                    "balance": (balance * rng.lognormal(0, 0.15, n)).round(2),
                    "channel": np.where(rng.random(n) < 0.95, channel, rng.choice(other, n)).tolist(),
                    "job": [job] * n,
                    "shoe_size": rng.normal(42, 2, n).round(),
                }
            )
        )
    df = pl.concat(parts)
    return df.with_columns(pl.Series("customer_id", [f"P{i:05d}" for i in range(df.height)])).sample(
        fraction=1.0, shuffle=True, seed=seed
    )


def train(df: pl.DataFrame, folder: Path, repo: ModelRepository, **kw: object) -> SegmentsTrainResult:
    path = folder / f"table{len(repo.versions('segments'))}.parquet"
    df.write_parquet(path)
    return train_segments(path, id_column="customer_id", drop=["group"], repo=repo, **kw)  # type: ignore[arg-type]


def segment_of(result: SegmentsTrainResult, df: pl.DataFrame) -> dict[str, int]:
    """Customer id → segment id, as the version's scorer answers."""
    scorer = SegmentScorer.load(result.path)
    out = scorer.score(request_arrays(scorer, df))  # type: ignore[arg-type]
    return dict(zip(df.get_column("customer_id").to_list(), out["segment"].tolist(), strict=True))


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[SegmentsTrainResult, pl.DataFrame, Path]:
    folder = tmp_path_factory.mktemp("segments")
    df = planted()
    return train(df, folder, ModelRepository(folder / "repo")), df, folder


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_auto_k_finds_the_planted_groups(method: str, tmp_path: Path) -> None:
    df = planted(seed=3)
    r = train(df, tmp_path, ModelRepository(tmp_path / "repo"), method=method)
    assert r.metrics.k == len(PLANTED)
    assert len(r.metrics.scores) == 7  # k = 2..8 tried
    # Each planted group lands in one segment of its own.
    seg = segment_of(r, df)
    groups = df.select("customer_id", "group").rows()
    assert len({(g, seg[c]) for c, g in groups}) == len(PLANTED)
    assert r.metrics.silhouette > 0.4
    assert (r.metrics.bic is not None) == (method == "gmm")


def test_names_describe_the_planted_traits(first: tuple[SegmentsTrainResult, pl.DataFrame, Path]) -> None:
    result, df, _ = first
    seg = segment_of(result, df)
    by_id = {s.id: s for s in result.segments}
    group_of = {g: by_id[seg[c]] for c, g in df.select("customer_id", "group").rows()}
    assert {"young", "low balance", "channel app", "job student"} <= set(group_of["young"].traits)
    assert {"older", "high balance", "channel branch", "job retired"} <= set(group_of["older"].traits)
    assert {"channel web", "job employee"} <= set(group_of["mid"].traits)
    assert not any("shoe" in t for s in result.segments for t in s.traits)  # noise is no trait
    for s in result.segments:
        assert s.name == ", ".join(s.traits[:3])
    assert len({s.name for s in result.segments}) == len(result.segments)


def test_ids_survive_a_retrain_on_a_reshuffled_table(first: tuple[SegmentsTrainResult, pl.DataFrame, Path]) -> None:
    result, df, folder = first
    repo = ModelRepository(result.path.parent.parent)
    before = segment_of(result, df)
    again = train(df.sample(fraction=1.0, shuffle=True, seed=99), folder, repo, seed=7)
    assert again.matched_version == result.version
    assert segment_of(again, df) == before
    assert {s.id: s.name for s in again.segments} == {s.id: s.name for s in result.segments}
    # One segment more: the old ones keep their ids, the new one gets an id never used before.
    grown = train(df, folder, repo, k=4)
    assert {s.id for s in grown.segments} == {0, 1, 2, 3}
    assert grown.matched_version == again.version


def test_matching_follows_the_profiles_not_the_order() -> None:
    space = SegmentSpace(planted_schema(), means={"age": 40.0}, stds={"age": 10.0}, shares={"channel": (0.5, 0.5)})
    profiles = [
        Profile({"age": a}, {"channel": {"app": s, "web": 1 - s}}) for a, s in ((20, 0.9), (40, 0.5), (60, 0.1))
    ]
    previous = Previous(3, ids=(7, 3, 5), profiles=(profiles[2], profiles[0], profiles[1]), next_id=9)
    ids, next_id, matched = match_ids(space, profiles, [10, 10, 10], previous)
    assert (ids, next_id, matched) == ([3, 5, 7], 9, True)
    more = [*profiles, Profile({"age": 90}, {"channel": {"app": 0.5, "web": 0.5}})]
    assert match_ids(space, more, [1, 1, 1, 1], previous)[:2] == ([3, 5, 7, 9], 10)
    assert match_ids(space, profiles, [5, 30, 10], None) == ([2, 0, 1], 3, False)


def planted_schema():  # type: ignore[no-untyped-def]
    from engine.tables.schema import Column, TableSchema

    return TableSchema((Column("age", "numeric", "FP32"), Column("channel", "categorical", "BYTES", ("app", "web"))))


def test_missing_and_unseen_values_still_get_a_segment(first: tuple[SegmentsTrainResult, pl.DataFrame, Path]) -> None:
    result, df, _ = first
    scorer = SegmentScorer.load(result.path)
    arrays = request_arrays(scorer, df.head(3))  # type: ignore[arg-type]
    arrays["age"][0, 0] = np.nan
    arrays["channel"][0, 0] = b"carrier pigeon"
    arrays["job"][1, 0] = b""
    out = scorer.score(arrays)
    assert set(out["segment"].tolist()) <= {s.id for s in result.segments}
    assert out["reason_codes"].shape == (3, 3)
    # A missing or unseen value is no trait of the customer.
    assert not any(r.startswith(("young", "older", "channel")) for r in out["reason_codes"][0])
    assert not any(r.startswith("job") for r in out["reason_codes"][1])


def test_one_row_and_a_large_batch_agree(first: tuple[SegmentsTrainResult, pl.DataFrame, Path]) -> None:
    result, df, _ = first
    scorer = SegmentScorer.load(result.path)
    whole = scorer.score(request_arrays(scorer, df))  # type: ignore[arg-type]  # Polars path (> 64 rows)
    for i in (0, 17, 101):
        one = scorer.score(request_arrays(scorer, df.slice(i, 1)))  # type: ignore[arg-type]
        assert one["segment"][0] == whole["segment"][i]
        assert one["reason_codes"][0].tolist() == whole["reason_codes"][i].tolist()


def test_bad_requests_are_one_sentence(first: tuple[SegmentsTrainResult, pl.DataFrame, Path]) -> None:
    result, df, _ = first
    scorer = SegmentScorer.load(result.path)
    arrays = request_arrays(scorer, df.head(2))  # type: ignore[arg-type]
    cases = [
        ({k: v for k, v in arrays.items() if k != "age"}, "'age' is missing"),
        (arrays | {"age": arrays["age"].astype(np.int64).astype(object)}, "'age'"),
        (arrays | {"balance": np.array([[np.inf], [1.0]], dtype=np.float32)}, "infinite"),
        (arrays | {"extra": arrays["age"]}, "'extra'"),
    ]
    for columns, fragment in cases:
        with pytest.raises(InvalidInputError) as info:
            scorer.score(columns)
        message = str(info.value)
        assert fragment in message and "\n" not in message


def test_bad_training_arguments_are_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    planted(30).write_parquet(path)
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(DataFileError, match="--drop column 'nope' is not in the table"):
        train_segments(path, drop=["nope"], repo=repo)
    with pytest.raises(UsageError, match="--k must be 'auto' or a whole number"):
        train_segments(path, k="many", repo=repo)
    with pytest.raises(UsageError, match="--method must be one of kmeans, gmm"):
        train_segments(path, method="dbscan", repo=repo)  # type: ignore[arg-type]
    assert repo.versions("segments") == []


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_pictures_are_png_files(first: tuple[SegmentsTrainResult, pl.DataFrame, Path]) -> None:
    result, _, _ = first
    assert [p.name for p in result.plots] == ["segments.png", "profiles.png"]
    for p in result.plots:
        assert p.parent == result.path
        width, height = png_size(p)
        assert width > 400 and height > 200


def test_metrics_file_holds_each_segment(first: tuple[SegmentsTrainResult, pl.DataFrame, Path]) -> None:
    import json

    result, df, _ = first
    m = json.loads((result.path / "metrics.json").read_text())
    assert m["k"] == len(m["segments"]) == result.metrics.k
    assert sum(s["size"] for s in m["segments"]) == df.height
    assert m["method"] == "kmeans" and -1 <= m["silhouette"] <= 1
    assert set(m["silhouette_by_k"]) == {str(k) for k in range(2, 9)}


def test_gmm_assignment_equals_scikit_learn() -> None:
    from sklearn.mixture import GaussianMixture

    x = np.random.default_rng(1).normal(size=(300, 4))
    x[:100] += 4
    gm = GaussianMixture(3, random_state=0).fit(x)
    assigner = Assigner("gmm", gm.means_, gm.weights_, gm.precisions_cholesky_)
    assert assigner.assign(x).tolist() == gm.predict(x).tolist()


def test_column_words_and_unique_names() -> None:
    assert column_words("branch_visits_month") == "branch visits"
    assert column_words("CreditScore") == "credit score"
    found = [[(2.0, "young"), (1.0, "channel app")], [(2.0, "young"), (1.5, "channel web")], []]
    assert segment_names([f[:1] for f in found], [0, 1, 2]) == [
        "young (segment 0)",
        "young (segment 1)",
        "typical customers",
    ]
    assert segment_names(found, [0, 1, 2])[:2] == ["young, channel app", "young, channel web"]


def test_marketing_data_has_its_columns_and_a_learnable_label() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    df = marketing_customers(3000, seed=2)
    assert {CUSTOMER_ID, LABEL, NAME, "marketing_consent", "channel", "has_loan", "balance"} <= set(df.columns)
    assert 0.65 < df.get_column("marketing_consent").mean() < 0.75  # type: ignore[operator]
    numbers = df.select(pl.exclude(CUSTOMER_ID, LABEL, NAME, "channel", "job", "marital")).fill_null(0)
    x = numbers.with_columns(pl.col("balance").log1p()).to_numpy().astype(float)
    x = (x - x.mean(0)) / x.std(0)
    y = (df.get_column(LABEL) == "yes").to_numpy()
    model = LogisticRegression(max_iter=500).fit(x[:2000], y[:2000])
    assert roc_auc_score(y[2000:], model.predict_proba(x[2000:])[:, 1]) > 0.7
    offers = marketing_offers(3000)
    assert offers.columns == ["offer", "value", "cost", "capacity"] and offers.height == 3


def test_cli_demo_data_then_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo-data", "marketing", "--out", str(tmp_path / "d"), "--rows", "600"]) == 0
    assert (tmp_path / "d" / "offers.csv").is_file()
    argv = ["train", "segments", "--data", str(tmp_path / "d" / "customers.parquet"), "--id", CUSTOMER_ID]
    argv += ["--drop", LABEL, NAME, "--repo", str(tmp_path / "repo"), "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "k = " in out and "(chosen by silhouette)" in out and "segments.png" in out
    assert main([*argv[:-4], "--k", "one", "--repo", str(tmp_path / "repo")]) == 2
    assert "--k must be" in capsys.readouterr().err


def test_kmeans_comes_from_the_device_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from sklearn.cluster import KMeans

    from engine.device import kmeans_class
    from engine.errors import UnsupportedOnGPU

    assert kmeans_class("cpu") is KMeans
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cuml" else real(name, *a))
    with pytest.raises(UnsupportedOnGPU, match="needs cuML"):
        kmeans_class("gpu")
