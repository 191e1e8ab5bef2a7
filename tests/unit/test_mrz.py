"""ICAO 9303 machine readable zones: the standard's specimens, round trips, and what a check digit must catch."""

from __future__ import annotations

import datetime as dt
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.documents.mrz import ALPHABET, LAYOUTS, MrzFields, birth_date, check_digit, compose, expiry_date, parse
from engine.errors import InvalidInputError

#: The specimens of Doc 9303 (parts 4, 5, 6 and 7): Anna Maria Eriksson of Utopia.
SPECIMENS = {
    "TD1": ("I<UTOD231458907<<<<<<<<<<<<<<<", "7408122F1204159UTO<<<<<<<<<<<6", "ERIKSSON<<ANNA<MARIA<<<<<<<<<<"),
    "TD2": ("I<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "D231458907UTO7408122F1204159<<<<<<<6"),
    "TD3": ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"),
    "MRV-A": ("V<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L8988901C4XXX4009078F96121096ZE184226B<<<<<<"),
    "MRV-B": ("V<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<", "L8988901C4XXX4009078F9612109<<<<<<<<"),
}
_VALUE = {c: i for i, c in enumerate(ALPHABET[:-1])} | {"<": 0}


def test_check_digits_of_the_standard() -> None:
    assert check_digit("L898902C3") == "6"
    assert check_digit("740812") == "2"
    assert check_digit("120415") == "9"
    assert check_digit("ZE184226B<<<<<") == "1"
    assert check_digit("<<<<<<<<<<<<<<") == "0"


@pytest.mark.parametrize("kind", SPECIMENS)
def test_specimens_parse_with_every_check_holding(kind: str) -> None:
    mrz = parse(SPECIMENS[kind])
    assert mrz.document_type == kind
    assert mrz.valid and all(mrz.checks.values()) and not mrz.format_errors
    assert (mrz.fields.surname, mrz.fields.given_names) == ("ERIKSSON", "ANNA MARIA")
    assert compose(kind, mrz.fields) == SPECIMENS[kind]
    expected_checks = {"number", "birth", "expiry"} | ({"composite"} if kind.startswith("TD") else set())
    assert set(mrz.checks) == expected_checks | ({"personal_number"} if kind == "TD3" else set())


def test_td3_fields() -> None:
    f = parse(SPECIMENS["TD3"]).fields
    assert (f.document_code, f.issuing_state, f.number, f.nationality) == ("P<", "UTO", "L898902C3", "UTO")
    assert (f.birth, f.sex, f.expiry, f.optional) == ("740812", "F", "120415", "ZE184226B")
    today = dt.date(2026, 12, 6)
    assert birth_date(f.birth, today) == dt.date(1974, 8, 12)
    assert expiry_date(f.expiry, today) == dt.date(2012, 4, 15)
    assert parse(SPECIMENS["TD3"]).expired(today) is True
    assert parse(SPECIMENS["TD3"]).expired(dt.date(2011, 1, 1)) is False


def test_td1_number_longer_than_nine() -> None:
    # Doc 9303 part 5, 4.2.4: the number's rest and its check digit open the optional data, position 15 is '<'.
    fields = MrzFields("I<", "UTO", "ERIKSSON", "ANNA MARIA", "D23145890734", "UTO", "740812", "F", "120415")
    lines = compose("TD1", fields)
    assert lines[0] == "I<UTOD23145890<7349<<<<<<<<<<<"
    mrz = parse(lines)
    assert mrz.valid and mrz.fields.number == "D23145890734" and mrz.fields.optional == ""


def test_td3_blank_personal_number_may_have_a_filler_digit() -> None:
    line2 = "L898902C36UTO7408122F1204159<<<<<<<<<<<<<<<"
    composite = check_digit(line2[0:10] + line2[13:20] + line2[21:43])
    assert parse((SPECIMENS["TD3"][0], line2 + composite)).valid
    assert parse((SPECIMENS["TD3"][0], line2[:42] + "0" + composite)).valid


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (("P<UTO",), "not 5"),
        (SPECIMENS["TD3"][:1] * 3, "not 44 x 44 x 44"),
        ((SPECIMENS["TD3"][0], SPECIMENS["TD2"][1]), "not 44 x 36"),
        ((SPECIMENS["TD3"][0], SPECIMENS["TD3"][1].replace("L", "l")), "only 0-9, A-Z"),
    ],
)
def test_lines_of_no_layout_are_refused(lines: tuple[str, ...], words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        parse(lines)


def test_format_errors_make_a_zone_invalid_though_its_digits_hold() -> None:
    mrz = parse(("P<UTOERIKSS0N<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", SPECIMENS["TD3"][1]))
    assert all(mrz.checks.values()) and mrz.format_errors == ("names",) and not mrz.valid
    junk = parse(("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<K<<<<<<<<<<<", SPECIMENS["TD3"][1]))
    assert junk.format_errors == ("names",)


def _covered(kind: str) -> dict[tuple[int, int], set[str]]:
    """Each position some check digit covers (the digit itself included), and by which checks."""
    layout = LAYOUTS[kind]
    last = layout.lines - 1 if kind != "TD1" else 1
    spans = {
        "number": [layout.number, (layout.number[0], layout.number_check, layout.number_check + 1)],
        "birth": [layout.birth, (last, layout.birth[2], layout.birth[2] + 1)],
        "expiry": [layout.expiry, (last, layout.expiry[2], layout.expiry[2] + 1)],
    }
    if layout.personal_check is not None:
        spans["personal_number"] = [layout.optional[0], (last, layout.personal_check, layout.personal_check + 1)]
    if layout.composite is not None:
        at, covered = layout.composite
        spans["composite"] = [*covered, (last, at, at + 1)]
    positions: dict[tuple[int, int], set[str]] = {}
    for name, where in spans.items():
        for line, start, stop in where:
            for i in range(start, stop):
                positions.setdefault((line, i), set()).add(name)
    return positions


@pytest.mark.parametrize("kind", SPECIMENS)
def test_every_single_character_change_a_check_digit_must_catch_is_caught(kind: str) -> None:
    """Weights 7, 3, 1 are prime to 10: a check digit sees every change of one character's value by other than a
    multiple of 10 in what it covers, and every change of the digit itself (Doc 9303 part 3, 4.9)."""
    lines = SPECIMENS[kind]
    caught = 0
    for (row, i), checks in _covered(kind).items():
        old = lines[row][i]
        for new in ALPHABET:
            if new == old:
                continue
            is_digit_position = any(i == p for p in _digit_positions(kind, row))
            if not is_digit_position and (_VALUE[new] - _VALUE[old]) % 10 == 0:
                continue  # '<' for '0', 'B' for '1': no weighted sum mod 10 can see these
            changed = list(lines)
            changed[row] = lines[row][:i] + new + lines[row][i + 1 :]
            mrz = parse(changed)
            assert not all(mrz.checks.values()), (kind, row, i, old, new, checks)
            caught += 1
    assert caught > 300


def _digit_positions(kind: str, row: int) -> list[int]:
    layout = LAYOUTS[kind]
    last = layout.lines - 1 if kind != "TD1" else 1
    positions = [layout.number_check] if row == layout.number[0] else []
    if row == last:
        positions += [layout.birth[2], layout.expiry[2]]
        positions += [p for p in (layout.personal_check, layout.composite and layout.composite[0]) if p is not None]
    return positions


_ALNUM = string.ascii_uppercase + string.digits
_WORD = st.text(string.ascii_uppercase, min_size=1, max_size=8)
_DATE = st.dates(dt.date(1930, 1, 1), dt.date(2060, 12, 31)).map(lambda d: d.strftime("%y%m%d"))
_CODES = {"TD1": ["ID", "I<", "AC"], "TD2": ["ID", "C<"], "TD3": ["P<", "PD"], "MRV-A": ["V<"], "MRV-B": ["VT"]}
#: The optional data each layout holds: (first field, TD1's second).
_OPTIONAL = {"TD1": (15, 11), "TD2": (7, 0), "TD3": (14, 0), "MRV-A": (16, 0), "MRV-B": (8, 0)}


@st.composite
def zones(draw: st.DrawFn) -> tuple[str, MrzFields]:
    kind = draw(st.sampled_from(sorted(LAYOUTS)))
    names_width = LAYOUTS[kind].names[2] - LAYOUTS[kind].names[1]
    surname = " ".join(draw(st.lists(_WORD, min_size=1, max_size=2)))
    given = " ".join(draw(st.lists(_WORD, max_size=3)))
    if len(surname) + 2 + len(given) > names_width:
        given = ""
    long_ok = kind in ("TD1", "TD2")
    number = draw(st.text(_ALNUM, min_size=1, max_size=12 if long_ok else 9))
    first, second = _OPTIONAL[kind]
    if len(number) > 9:
        first -= len(number) - 9 + 2
    optional = draw(st.text(_ALNUM, max_size=max(first, 0)))
    state = draw(st.sampled_from(["UTO", "D<<", "GBR", "NLD"]))
    return kind, MrzFields(
        document_code=draw(st.sampled_from(_CODES[kind])),
        issuing_state=state,
        surname=surname,
        given_names=given,
        number=number,
        nationality=draw(st.sampled_from(["UTO", "D<<", "FRA"])),
        birth=draw(_DATE),
        sex=draw(st.sampled_from("MFX<")),
        expiry=draw(_DATE),
        optional=optional,
        optional_2=draw(st.text(_ALNUM, max_size=second)),
    )


@given(zones())
@settings(max_examples=300, deadline=None)
def test_compose_then_parse_gives_the_fields_back(zone: tuple[str, MrzFields]) -> None:
    kind, fields = zone
    lines = compose(kind, fields)
    assert [len(line) for line in lines] == [LAYOUTS[kind].width] * LAYOUTS[kind].lines
    mrz = parse(lines)
    assert mrz.document_type == kind
    assert mrz.valid, mrz.failed()
    assert mrz.fields == fields
