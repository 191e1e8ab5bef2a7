"""The one card-number rule (engine.security.cards), and that masking, the audit log, the output guard, the
subjects' pseudonyms and the tests' leak scan all follow it."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidInputError
from engine.security.audit import AuditLog
from engine.security.cards import candidates, card_rows, count_cards, find_cards, first_card_row, has_card, luhn_valid
from engine.security.guard import OutputGuard
from engine.security.protect import mask_text
from engine.security.trail import subjects_of
from tests.leak_scan import find_leaks


def luhn(prefix: str) -> str:
    """``prefix`` with the check digit that makes it Luhn-valid."""
    return next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))


def not_luhn(prefix: str) -> str:
    return next(prefix + d for d in "0123456789" if not luhn_valid(prefix + d))


VISA = luhn("411111111111111")  # 16 digits
UATP = luhn("13541234567891")  # 15 digits, starts with 1
TROY = luhn("979200000000000")  # 16 digits, starts with 9
FLEET = luhn("70888812345678")  # 15 digits, starts with 7
EPOCH_US = luhn("170000000000000")  # 16 digits starting with 1: a µs timestamp, Luhn-valid by chance
EPOCH_MS = luhn("170000000000")  # 13 digits starting with 1
LEADING_ZERO = luhn("041111111111111")


@pytest.mark.parametrize("card", [VISA, UATP, TROY, FLEET, luhn("3782822463100"), luhn("622126123456789012")])
def test_cards_of_every_network_are_found(card: str) -> None:
    text = f"paid with {card}, thanks"
    assert find_cards(text) == [(10, 10 + len(card))]
    assert has_card(text) and count_cards(text) == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"at {EPOCH_US} us", "an epoch time in µs: starts with 1 but is not 15 digits long"),
        (f"at {EPOCH_MS} ms", "an epoch time in ms"),
        (f"ref {LEADING_ZERO}", "no card network starts with 0"),
        (f"ref {not_luhn('411111111111111')}", "not Luhn-valid"),
        (f"hash a{VISA}f", "inside a hex hash"),
        (f"id X{VISA}", "glued to a letter"),
        (f"score 0.{VISA}", "the decimals of a number"),
        (f"{luhn('41111111111111111111')}", "20 digits: an id, not a card"),
        (f"4111  1111  1111  {VISA[-4:]}", "double spaces do not join groups"),
    ],
)
def test_what_is_no_card(text: str, why: str) -> None:
    assert find_cards(text) == [], why
    assert not has_card(text) and count_cards(text) == 0


def test_separators_and_a_date_in_front() -> None:
    spaced = " ".join(VISA[i : i + 4] for i in range(0, 16, 4))
    dashed = spaced.replace(" ", "-")
    text = f"2024-01-15 {spaced} and {dashed}."
    spans = find_cards(text)
    assert [text[a:b] for a, b in spans] == [spaced, dashed]
    uatp = f"{UATP[:4]} {UATP[4:9]} {UATP[9:]}"
    assert find_cards(uatp) == [(0, len(uatp))]


def test_masking_follows_the_rule() -> None:
    text = f"uatp {UATP} visa {VISA} at {EPOCH_US}"
    masked = mask_text(text)
    assert UATP not in masked and VISA not in masked and EPOCH_US in masked
    assert masked.startswith(f"uatp {UATP[:5]}") and count_cards(masked) == 0


def test_the_audit_log_refuses_what_the_rule_calls_a_card(tmp_path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for value in (UATP, int(TROY), f"card {FLEET}"):
        with pytest.raises(InvalidInputError, match="card number"):
            log.append("decision", subject=value)
    with pytest.raises(InvalidInputError, match="card number"):
        log.append_frame("decision", pl.DataFrame({"subject": ["a", UATP]}))
    log.append("decision", at=int(EPOCH_US), at_ms=EPOCH_MS, pseudonym="a" + VISA + "f")  # no card: written
    log.append_frame("decision", pl.DataFrame({"at": [int(EPOCH_US)], "score": [float("0." + VISA)]}))
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 2


def test_the_guard_and_the_pseudonyms_follow_the_rule() -> None:
    frame = pl.DataFrame({"id": [UATP, f"{UATP[:4]} {UATP[4:9]} {UATP[9:]}", EPOCH_US], "score": [0.1, 0.2, 0.3]})
    out = OutputGuard.build(["id"], subject=["id"], pseudonym_key=b"k" * 32).apply(frame)
    assert UATP not in "".join(out["id"].to_list()) and out["id"][2] == EPOCH_US
    subjects = subjects_of(frame["id"], b"k" * 32).to_list()
    assert subjects[0] == subjects[1] != subjects[2]  # one card, however it is spelled


def test_the_leak_scan_follows_the_rule(tmp_path) -> None:
    log = tmp_path / "server.log"
    log.write_text(f"I1204 started at {EPOCH_US}\nauthorized {UATP}\n", encoding="utf-8")
    assert find_leaks([log]) == [f"{log}: 1 card numbers, 0 customer ids"]
    log.write_text(f"I1204 started at {EPOCH_US}\n", encoding="utf-8")
    assert find_leaks([log]) == []


def test_columns_find_the_same_cards_as_text() -> None:
    values = pl.Series("v", ["none", f"a {VISA}", None, EPOCH_US, f"x {UATP} y {TROY}"])
    rows, spans = card_rows(values)
    assert [r for r, s in zip(rows, spans, strict=True) if s] == [1, 4] and len(spans[-1]) == 2
    assert first_card_row(values) == 1
    ints = pl.Series("n", [12, int(VISA), int(EPOCH_US)])
    assert candidates(ints).to_list() == [False, True, True] and first_card_row(ints) == 1
    assert not candidates(pl.Series("f", [float(VISA)])).any()  # floats hold no card number


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789 -.ax", max_size=40), min_size=1, max_size=20))
def test_the_polars_prefilter_never_hides_a_card(texts: list[str]) -> None:
    seen = candidates(pl.Series("t", texts)).to_list()
    for text, candidate in zip(texts, seen, strict=True):
        assert candidate or not find_cards(text), text
