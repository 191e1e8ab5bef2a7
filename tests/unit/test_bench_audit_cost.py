"""bench.audit_cost: the table it reads and the arguments it refuses (the timing is bench.scan's, tested there)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bench.audit_cost import main, read_table


def test_a_table_of_ones_own_is_read_with_no_label_until_one_is_named(tmp_path: Path) -> None:
    frame = pl.DataFrame({"bytes": [1.0, 2.0], "kind": ["a", "b"]})
    frame.write_parquet(tmp_path / "t.parquet")
    frame.write_csv(tmp_path / "t.csv")
    for name in ("t.parquet", "t.csv"):
        table, label = read_table(tmp_path / name)
        assert table.equals(frame) and label is None


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--pairs", "0"], "--copies and --pairs must be positive"),
        (["--label", "nope"], "--label nope: the table has no such column"),
    ],
)
def test_bad_arguments_end_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    pl.DataFrame({"bytes": [1.0, 2.0]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path / "t.parquet"), *argv])
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_an_unreadable_file_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(SystemExit, match="cannot be read as a table"):
        main(["--data", str(tmp_path / "bad.parquet")])
