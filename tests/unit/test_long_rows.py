"""Long CSV rows: a row longer than Arrow's block is read whole; a row over the limit is rejected by its row
number and size, never its content; every other row reads, and scores, as if that row were not there."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import engine.tables.io as tableio
from engine.batch.scan import LocalSpec, scan
from engine.cli import main
from engine.errors import DataFileError, UsageError
from engine.families.churn import ChurnTrainResult
from engine.families.threat.train import ThreatTrainResult
from engine.tables.io import iter_batches
from tests.conftest import read_alerts

MB = 1 << 20
#: The bar: one 10 MB row among normal ones, over the default limit of 8 MB.
TEN_MB = "x" * (10 * MB)
#: What must never appear in a reason or a report: a run of the long row's content.
CONTENT = "x" * 64
REASON = "the row is 10.0 MB, over the limit of 8.0 MB (FINSCORE_MAX_ROW_BYTES, --max-row-bytes)"


@pytest.fixture(autouse=True)
def default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINSCORE_MAX_ROW_BYTES", raising=False)


def write_lines(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_bytes(end.join(lines).encode() + end.encode())
    return path


def read(path: Path, *, max_row_bytes: int | None = None) -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """Every batch of ``path`` as one frame, and the rows the reader rejected."""
    rejected: list[tuple[int, str]] = []

    def reject(row: int, reason: str) -> None:
        rejected.append((row, reason))

    batches = list(iter_batches(path, max_row_bytes=max_row_bytes, on_reject=reject))
    frame = pl.from_arrow(pa.Table.from_batches(batches))
    assert isinstance(frame, pl.DataFrame)
    return frame, rejected


def test_a_10_mb_row_is_rejected_by_number_and_every_other_row_reads_unchanged(tmp_path: Path) -> None:
    rows = [f"{i},{i * 7 % 1000}.25,name{i}" for i in range(3000)]
    at = 1234
    with_long = [*rows[:at], f"{at},1.5,{TEN_MB}", *rows[at + 1 :]]
    long_file = write_lines(tmp_path / "long.csv", ["id,amount,name", *with_long])
    without = write_lines(tmp_path / "without.csv", ["id,amount,name", *rows[:at], *rows[at + 1 :]])
    frame, rejected = read(long_file)
    expected, none = read(without)
    assert none == [] and expected.height == 2999
    assert frame.equals(expected)  # the same rows, values and order as a file without it
    assert rejected == [(at, REASON)]
    # A caller that cannot report the row gets one sentence naming it, not Arrow's "straddling object".
    with pytest.raises(DataFileError, match=r"long\.csv: data row 1,234 \(0-based\): the row is 10\.0 MB") as err:
        list(iter_batches(long_file))
    assert CONTENT not in str(err.value)


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_a_row_longer_than_the_block_but_under_the_limit_is_read_whole(tmp_path: Path, end: str) -> None:
    value = ("0123456789" * (6 * MB // 10)) + "end"
    assert tableio._BLOCK < len(value) < 8 * MB  # longer than Arrow's block, under the default limit
    lines = ["id,text", "0,short", f"1,{value}", "2,after", f"3,{value[::-1]}"]
    frame, rejected = read(write_lines(tmp_path / "wide.csv", lines, end))
    assert rejected == []
    assert frame.get_column("id").to_list() == ["0", "1", "2", "3"]
    texts = frame.get_column("text").to_list()
    assert texts[0] == "short" and texts[1] == value and texts[2] == "after" and texts[3] == value[::-1]


#: Value lengths: a row is "<id>,<value>", so with blocks of 64 and a limit of 200 these fall on each side of both.
LENGTHS = [0, 1, 5, 40, 60, 61, 62, 63, 64, 65, 100, 125, 126, 127, 128, 196, 197, 198, 199, 200, 500]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_lines_of_every_length_around_the_block_and_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str
) -> None:
    """Blocks of 64 bytes and a limit of 200: rows just under, at and over each, first, last, without a final
    line end, and empty lines, against what the rows are."""
    monkeypatch.setattr(tableio, "_BLOCK", 64)
    monkeypatch.setattr(tableio, "_RUN", 150)  # and Arrow reads runs of about that, so several per file
    rng = random.Random(7)
    for trial in range(40):
        lengths = [rng.choice(LENGTHS) for _ in range(30)]
        rows = [f"{i},{'v' * n}" for i, n in enumerate(lengths)]
        blank = rng.random() < 0.3
        body = end.join(["id,v", *(r + (end if blank and i % 7 == 3 else "") for i, r in enumerate(rows))])
        path = tmp_path / f"t{trial}.csv"
        path.write_bytes((body + (end if trial % 2 else "")).encode())
        frame, rejected = read(path, max_row_bytes=200)
        over = [i for i, r in enumerate(rows) if len(r) > 200]
        assert [row for row, _ in rejected] == over, trial
        kept = [i for i in range(len(rows)) if i not in over]
        assert frame.get_column("id").to_list() == [str(i) for i in kept], trial
        assert frame.get_column("v").to_list() == ["v" * lengths[i] for i in kept], trial


def test_a_row_just_over_a_block_is_read_alone_wherever_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrow fails a row whose rest does not fit in the next block; a row of a block and a few bytes, after a
    row that puts its start at each offset of a block, shows that every row longer than a block is found."""
    monkeypatch.setattr(tableio, "_BLOCK", 64)
    for offset in range(3, 64):
        after = [f"{i},{'x' * 17}" for i in range(8)]  # so that the block after the long row is not the last
        lines = ["id,v", f"a,{'v' * (offset - 3)}", f"b,{'w' * 68}", *after]  # rows of offset and 71 bytes
        frame, rejected = read(write_lines(tmp_path / f"o{offset}.csv", lines), max_row_bytes=200)
        assert rejected == [], offset
        assert frame.get_column("v").to_list() == ["v" * (offset - 3), "w" * 68, *["x" * 17] * 8], offset


def test_the_limit_is_a_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_lines(tmp_path / "s.csv", ["id,v", "0,a", f"1,{'x' * 2000}", "2,b"])
    monkeypatch.setenv("FINSCORE_MAX_ROW_BYTES", "1000")
    frame, rejected = read(path)
    assert frame.get_column("id").to_list() == ["0", "2"]
    reason = "the row is 2,002 bytes, over the limit of 1,000 bytes (FINSCORE_MAX_ROW_BYTES, --max-row-bytes)"
    assert rejected == [(1, reason)]
    assert read(path, max_row_bytes=4000)[1] == []  # the argument (the flag's value) beats the variable
    monkeypatch.setenv("FINSCORE_MAX_ROW_BYTES", "0")
    with pytest.raises(UsageError, match="must be between 1 and 1,073,741,824 bytes, got 0"):
        read(path)


def test_a_header_over_the_limit_is_one_sentence(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "h.csv", [",".join(f"c{i}" for i in range(500)), "1"])
    with pytest.raises(DataFileError, match=r"h\.csv: the CSV header line is 2,389 bytes, over the limit of 100"):
        list(iter_batches(path, max_row_bytes=100))


def test_a_malformed_long_row_is_named_without_its_content(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "m.csv", ["a,b", "1,2", f"{'x' * (5 * MB)},2,3"])
    with pytest.raises(DataFileError, match=r"Expected 2 columns, got 3\)$") as err:
        list(iter_batches(path))
    assert CONTENT not in str(err.value)


def test_score_rejects_the_10_mb_row_and_scores_every_other_row(
    trained: ChurnTrainResult, customers: pl.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = 777
    rows = customers.head(2000).drop("churned")
    long_rows = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == at).then(pl.lit(TEN_MB)).otherwise(pl.col("region")).alias("region")
    )
    long_rows.write_csv(tmp_path / "long.csv")
    pl.concat([rows.head(at), rows.slice(at + 1)]).write_csv(tmp_path / "without.csv")
    repo = str(Path(trained.path).parent.parent)

    def score(data: str, out: str, *flags: str) -> str:
        argv = ["score", "churn", "--data", str(tmp_path / data), "--out", str(tmp_path / out), "--local"]
        assert main([*argv, "--repo", repo, "--no-progress", *flags]) == 0
        return capsys.readouterr().out

    assert "read 2,000 rows, scored 1,999, rejected 1 " in score("long.csv", "long_scores.csv")
    score("without.csv", "without_scores.csv")
    scored = pl.read_csv(tmp_path / "long_scores.csv")
    alone = pl.read_csv(tmp_path / "without_scores.csv")
    assert scored.get_column("row").to_list() == [i for i in range(2000) if i != at]
    # The other rows score exactly as in a file without the long one (where the rows after it are one lower).
    renumbered = alone.with_columns(pl.when(pl.col("row") >= at).then(pl.col("row") + 1).otherwise("row").alias("row"))
    assert scored.equals(renumbered)
    report = (tmp_path / "long_scores.rejected.csv").read_text(encoding="utf-8")
    assert CONTENT not in report
    assert pl.read_csv(tmp_path / "long_scores.rejected.csv").rows() == [(at, None, REASON)]
    # --max-row-bytes above the row: it is read and scored like any other.
    assert "scored 2,000, rejected 0 " in score("long.csv", "raised.csv", "--max-row-bytes", str(16 * MB))
    assert not (tmp_path / "raised.rejected.csv").exists()


def test_scan_reads_a_row_longer_than_the_block_and_rejects_a_row_over_the_limit(
    threat_trained: ThreatTrainResult, events: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scan reads CSV through the same reader, so a 6 MB row (in a column the model does not use) is read and
    the alerts are those of the same file with a short value there. Over the limit, that row is rejected by its
    number and size, and every other row keeps its number and its alert."""
    at = 321
    table = events.head(1500).with_columns(pl.all().cast(pl.String), note=pl.lit("n"))
    wide = table.with_columns(
        pl.when(pl.int_range(pl.len()) == at).then(pl.lit("y" * (6 * MB))).otherwise("note").alias("note")
    )
    for name, frame in (("short", table), ("wide", wide)):
        (tmp_path / name).mkdir()
        frame.write_csv(tmp_path / name / "events.csv")
    spec = LocalSpec(str(threat_trained.path), threads=1)

    def alerts(name: str, out: Path) -> tuple[dict[str, object], list[tuple[int, float]]]:
        summary = scan([tmp_path / name], out, spec=spec, batch_rows=500, progress=False)
        found = sorted((a["finscore"]["row"], a["finscore"]["anomaly_score"]) for a in read_alerts(out))
        return {"rows": summary.rows_read, "scored": summary.scored, "rejected": summary.rejected}, found

    short_counts, short_alerts = alerts("short", tmp_path / "short.jsonl")
    wide_counts, wide_alerts = alerts("wide", tmp_path / "wide.jsonl")
    assert wide_counts == short_counts == {"rows": 1500, "scored": 1500, "rejected": 0}
    assert short_alerts and wide_alerts == short_alerts
    monkeypatch.setenv("FINSCORE_MAX_ROW_BYTES", str(MB))
    over_counts, over_alerts = alerts("wide", tmp_path / "over.jsonl")
    assert over_counts == {"rows": 1500, "scored": 1499, "rejected": 1}
    assert over_alerts == [a for a in short_alerts if a[0] != at]
    rejected = pl.read_csv(tmp_path / "over.rejected.csv")
    assert rejected["row"].to_list() == [at]
    assert rejected["reason"][0].startswith("the row is 6.0 MB, over the limit of 1.0 MB")
    assert "yyyy" not in (tmp_path / "over.rejected.csv").read_text()
