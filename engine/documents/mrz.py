"""The machine readable zone of ICAO Doc 9303 travel documents: its five layouts, check digits and fields.

::

    TD1    3 x 30   identity cards       number, optional data, dates, composite digit, then the name line
    TD2    2 x 36   identity cards       name line, then number, dates, optional data, composite digit
    TD3    2 x 44   passports (P...)     name line, then number, dates, personal number + its digit, composite
    MRV-A  2 x 44   visas (V...)         as TD3 without the personal number's digit and the composite digit
    MRV-B  2 x 36   visas (V...)         as TD2 without the composite digit

A check digit is the sum of the field's character values (``0-9``, ``A`` = 10 ... ``Z`` = 35, ``<`` = 0) weighted
7, 3, 1, 7, 3, 1 ..., modulo 10 (Doc 9303 part 3, 4.9). It catches every change of one character whose value
moves by other than a multiple of 10: not ``<`` read as ``0``, nor ``1`` as ``B``; the composite digit, over
most of the zone, catches a second error of that kind only where it falls outside the fields it covers.

:func:`parse` reads lines into a :class:`Mrz`; its ``checks`` say which digits hold and ``format_errors`` which
positions hold characters their field cannot (a letter in a date, a digit in a name), so a caller accepts only a
zone with both clean. :func:`compose` writes the lines of a :class:`MrzFields` (the test documents' source).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from engine.errors import InvalidInputError

__all__ = [
    "ALPHABET",
    "LAYOUTS",
    "Layout",
    "Mrz",
    "MrzFields",
    "check_digit",
    "compose",
    "layout_of",
    "parse",
]

#: The characters an MRZ is written in.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ<"
_VALUE = {c: i for i, c in enumerate(ALPHABET[:-1])} | {"<": 0}
_WEIGHTS = (7, 3, 1)
_LINE = re.compile(r"[0-9A-Z<]+")
_NAME = re.compile(r"[A-Z]+(<{1,2}[A-Z]+)*<*|<+")


def check_digit(text: str) -> str:
    """The ICAO 9303 check digit of ``text``.

    >>> check_digit("L898902C3")
    '6'
    >>> check_digit("740812")
    '2'
    """
    total = 0
    for i, c in enumerate(text):
        try:
            total += _VALUE[c] * _WEIGHTS[i % 3]
        except KeyError:
            msg = f"an MRZ holds only 0-9, A-Z and '<', not {c!r}"
            raise InvalidInputError(msg) from None
    return str(total % 10)


@dataclass(frozen=True)
class Layout:
    """One of the five layouts: its lines, their length, and where its fields are (line, start, stop)."""

    name: str
    lines: int
    width: int
    number: tuple[int, int, int]
    number_check: int
    nationality: tuple[int, int, int]
    birth: tuple[int, int, int]
    expiry: tuple[int, int, int]
    sex: tuple[int, int]
    optional: tuple[tuple[int, int, int], ...]
    names: tuple[int, int, int]
    personal_check: int | None = None  # TD3: the digit of the personal number (line 1)
    composite: tuple[int, tuple[tuple[int, int, int], ...]] | None = None  # (position on the last line, covered)


#: The five layouts by name (positions 0-based; ranges half-open).
LAYOUTS = {
    "TD1": Layout(
        "TD1", 3, 30, number=(0, 5, 14), number_check=14, nationality=(1, 15, 18), birth=(1, 0, 6),
        expiry=(1, 8, 14), sex=(1, 7), optional=((0, 15, 30), (1, 18, 29)), names=(2, 0, 30),
        composite=(29, ((0, 5, 30), (1, 0, 7), (1, 8, 15), (1, 18, 29))),
    ),
    "TD2": Layout(
        "TD2", 2, 36, number=(1, 0, 9), number_check=9, nationality=(1, 10, 13), birth=(1, 13, 19),
        expiry=(1, 21, 27), sex=(1, 20), optional=((1, 28, 35),), names=(0, 5, 36),
        composite=(35, ((1, 0, 10), (1, 13, 20), (1, 21, 35))),
    ),
    "TD3": Layout(
        "TD3", 2, 44, number=(1, 0, 9), number_check=9, nationality=(1, 10, 13), birth=(1, 13, 19),
        expiry=(1, 21, 27), sex=(1, 20), optional=((1, 28, 42),), names=(0, 5, 44), personal_check=42,
        composite=(43, ((1, 0, 10), (1, 13, 20), (1, 21, 43))),
    ),
    "MRV-A": Layout(
        "MRV-A", 2, 44, number=(1, 0, 9), number_check=9, nationality=(1, 10, 13), birth=(1, 13, 19),
        expiry=(1, 21, 27), sex=(1, 20), optional=((1, 28, 44),), names=(0, 5, 44),
    ),
    "MRV-B": Layout(
        "MRV-B", 2, 36, number=(1, 0, 9), number_check=9, nationality=(1, 10, 13), birth=(1, 13, 19),
        expiry=(1, 21, 27), sex=(1, 20), optional=((1, 28, 36),), names=(0, 5, 36),
    ),
}  # fmt: skip


def layout_of(lines: tuple[str, ...] | list[str]) -> Layout | None:
    """The layout of ``lines`` from their count, length and first letter (``V``: a visa), or None."""
    widths = {len(line) for line in lines}
    if len(widths) != 1:
        return None
    width, visa = widths.pop(), lines[0][:1] == "V"
    if len(lines) == 3 and width == 30:
        return LAYOUTS["TD1"]
    if len(lines) == 2 and width == 36:
        return LAYOUTS["MRV-B" if visa else "TD2"]
    if len(lines) == 2 and width == 44:
        return LAYOUTS["MRV-A" if visa else "TD3"]
    return None


@dataclass(frozen=True)
class MrzFields:
    """What a zone says. Dates are ``YYMMDD`` as written; ``surname``/``given_names`` with spaces for fillers."""

    document_code: str  # two characters, e.g. "P<", "ID", "V<"
    issuing_state: str  # three, e.g. "UTO", "D<<"
    surname: str
    given_names: str
    number: str
    nationality: str
    birth: str
    sex: str  # "M", "F", "X" or "<"
    expiry: str
    optional: str = ""  # TD3: the personal number; TD1: line 1's optional data
    optional_2: str = ""  # TD1: line 2's optional data


@dataclass(frozen=True)
class Mrz:
    """A zone as parsed: its lines, layout, fields, each check digit (True when it holds) and format errors."""

    lines: tuple[str, ...]
    layout: Layout
    fields: MrzFields
    checks: dict[str, bool]
    format_errors: tuple[str, ...] = field(default=())

    @property
    def document_type(self) -> str:
        return self.layout.name

    @property
    def valid(self) -> bool:
        """Every check digit holds and every field holds only what it may."""
        return all(self.checks.values()) and not self.format_errors

    def failed(self) -> list[str]:
        """The names of the checks that do not hold, then the format errors."""
        return [name for name, ok in self.checks.items() if not ok] + list(self.format_errors)

    def expired(self, today: dt.date) -> bool | None:
        """Whether the expiry date is before ``today`` (None when it is not a date)."""
        expiry = expiry_date(self.fields.expiry, today)
        return None if expiry is None else expiry < today


def _date(text: str) -> tuple[int, int, int] | None:
    if not text.isdigit() or len(text) != 6:
        return None
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    try:
        dt.date(2000 + yy, mm, dd)  # 2000 is a leap year: 29 February is a date in either century
    except ValueError:
        return None
    return yy, mm, dd


def birth_date(text: str, today: dt.date) -> dt.date | None:
    """A ``YYMMDD`` birth date: in the latest century that puts it no later than ``today``."""
    parts = _date(text)
    if parts is None:
        return None
    yy, mm, dd = parts
    century = today.year // 100 * 100
    year = century + yy if century + yy <= today.year else century - 100 + yy
    try:
        return dt.date(year, mm, dd)
    except ValueError:  # 29 February of a year that is not a leap year
        return None


def expiry_date(text: str, today: dt.date) -> dt.date | None:
    """A ``YYMMDD`` expiry date: in the century that puts it within 50 years of ``today``."""
    parts = _date(text)
    if parts is None:
        return None
    yy, mm, dd = parts
    year = today.year // 100 * 100 + yy
    year += 100 if year < today.year - 50 else -100 if year > today.year + 50 else 0
    try:
        return dt.date(year, mm, dd)
    except ValueError:
        return None


def _cut(lines: tuple[str, ...], where: tuple[int, int, int]) -> str:
    line, start, stop = where
    return lines[line][start:stop]


def _digit_holds(field_text: str, digit: str, *, blank_ok: bool = False) -> bool:
    """A check digit holds; ``<`` does too where ``blank_ok`` and the field is all fillers (9303 part 4, 4.2.2)."""
    if blank_ok and digit == "<" and set(field_text) <= {"<"}:
        return True
    return digit.isdigit() and check_digit(field_text) == digit


def parse(lines: tuple[str, ...] | list[str]) -> Mrz:
    """Parse the lines of a zone (``<`` fillers included) into an :class:`Mrz`.

    Raises :class:`InvalidInputError` when the lines fit none of the five layouts or hold other characters.

    >>> mrz = parse(["P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<", "L898902C36UTO7408122F1204159ZE184226B<<<<<10"])
    >>> mrz.document_type, mrz.fields.surname, mrz.fields.given_names, mrz.valid
    ('TD3', 'ERIKSSON', 'ANNA MARIA', True)
    """
    lines = tuple(lines)
    layout = layout_of(lines)
    if layout is None:
        shape = " x ".join(str(len(line)) for line in lines) or "no lines"
        msg = f"an MRZ is 3 lines of 30, 2 of 36 or 2 of 44 characters, not {shape}"
        raise InvalidInputError(msg)
    for line in lines:
        if not _LINE.fullmatch(line):
            msg = "an MRZ holds only 0-9, A-Z and '<'"
            raise InvalidInputError(msg)
    first = lines[0]
    number = _cut(lines, layout.number)
    number_digit = lines[layout.number[0]][layout.number_check]
    optional = [_cut(lines, where) for where in layout.optional]
    checks: dict[str, bool] = {}
    if number_digit == "<" and layout.name in ("TD1", "TD2"):
        # A number longer than 9: its rest opens the optional data, followed by the number's check digit.
        rest = optional[0].partition("<")[0]
        if len(rest) < 2:
            checks["number"] = False
        else:
            number, digit = number + rest[:-1], rest[-1]
            checks["number"] = _digit_holds(number, digit)
            optional[0] = optional[0][len(rest) + 1 :]
    else:
        checks["number"] = _digit_holds(number, number_digit)
    birth = _cut(lines, layout.birth)
    expiry = _cut(lines, layout.expiry)
    last = lines[-1] if layout.name != "TD1" else lines[1]
    checks["birth"] = _digit_holds(birth, last[layout.birth[2]])
    checks["expiry"] = _digit_holds(expiry, last[layout.expiry[2]])
    if layout.personal_check is not None:
        checks["personal_number"] = _digit_holds(optional[0], last[layout.personal_check], blank_ok=True)
    if layout.composite is not None:
        at, covered = layout.composite
        checks["composite"] = _digit_holds("".join(_cut(lines, w) for w in covered), last[at])

    surname, _, given = _cut(lines, layout.names).partition("<<")
    sex = lines[layout.sex[0]][layout.sex[1]]
    fields = MrzFields(
        document_code=first[:2],
        issuing_state=first[2:5],
        surname=surname.replace("<", " ").strip(),
        given_names=given.replace("<", " ").strip(),
        number=number.rstrip("<"),
        nationality=_cut(lines, layout.nationality),
        birth=birth,
        sex=sex,
        expiry=expiry,
        optional=optional[0].rstrip("<"),
        optional_2=optional[1].rstrip("<") if len(optional) > 1 else "",
    )
    return Mrz(lines, layout, fields, checks, _format_errors(lines, layout))


def _format_errors(lines: tuple[str, ...], layout: Layout) -> tuple[str, ...]:
    """What no document holds: a code of the wrong kind, a letter in a date, a digit in a name or a state."""
    errors = []
    first = lines[0]
    visa = layout.name.startswith("MRV")
    if first[0] not in ("V" if visa else "P" if layout.name == "TD3" else "ACI") or not re.fullmatch(
        r"[A-Z<]", first[1]
    ):
        errors.append("document code")
    for name, where in (("issuing state", (0, 2, 5)), ("nationality", layout.nationality)):
        if not re.fullmatch(r"[A-Z]{1,3}<{0,2}", _cut(lines, where)):
            errors.append(name)
    for name, where in (("birth date", layout.birth), ("expiry date", layout.expiry)):
        if _date(_cut(lines, where)) is None:
            errors.append(name)
    if lines[layout.sex[0]][layout.sex[1]] not in "MFX<":
        errors.append("sex")
    names = _cut(lines, layout.names)
    if not _NAME.fullmatch(names):
        errors.append("names")
    return tuple(errors)


def compose(document_type: str, f: MrzFields) -> tuple[str, ...]:
    """The lines of a zone of ``document_type`` (a key of :data:`LAYOUTS`) saying ``f``; names are cut to fit.

    >>> fields = MrzFields("P<", "UTO", "ERIKSSON", "ANNA MARIA", "L898902C3", "UTO", "740812", "F", "120415",
    ...                    "ZE184226B")
    >>> compose("TD3", fields)[1]
    'L898902C36UTO7408122F1204159ZE184226B<<<<<10'
    """
    layout = LAYOUTS[document_type]
    width = layout.width
    lines = [["<"] * width for _ in range(layout.lines)]

    def put(where: tuple[int, int, int], text: str) -> None:
        line, start, stop = where
        text = text[: stop - start].ljust(stop - start, "<")
        lines[line][start:stop] = list(text)

    def filled(text: str) -> str:
        return re.sub(r"[^0-9A-Z<]", "<", text.upper().replace(" ", "<"))

    put((0, 0, 2), filled(f.document_code))
    put((0, 2, 5), filled(f.issuing_state))
    put(layout.names, filled(f.surname) + "<<" + filled(f.given_names))
    line = layout.number[0]
    optional = [filled(f.optional), filled(f.optional_2)]
    number = filled(f.number)
    if len(number) > 9:
        if layout.name not in ("TD1", "TD2"):
            msg = f"a document number of more than 9 characters fits only TD1 and TD2, not {layout.name}"
            raise InvalidInputError(msg)
        put(layout.number, number[:9])
        lines[line][layout.number_check] = "<"
        optional[0] = number[9:] + check_digit(number) + "<" + optional[0]
    else:
        put(layout.number, number)
        lines[line][layout.number_check] = check_digit(number.ljust(9, "<"))
    for where, text in zip(layout.optional, optional, strict=False):
        put(where, text)
    put(layout.nationality, filled(f.nationality))
    put(layout.birth, f.birth)
    put(layout.expiry, f.expiry)
    dates = layout.birth[0]
    lines[dates][layout.birth[2]] = check_digit(f.birth)
    lines[dates][layout.sex[1]] = filled(f.sex)[:1] or "<"
    lines[dates][layout.expiry[2]] = check_digit(f.expiry)
    if layout.personal_check is not None:
        personal = "".join(lines[1][28:42])
        lines[1][layout.personal_check] = "<" if set(personal) == {"<"} else check_digit(personal)
    if layout.composite is not None:
        at, covered = layout.composite
        written = tuple("".join(chars) for chars in lines)
        lines[-1 if layout.name != "TD1" else 1][at] = check_digit("".join(_cut(written, w) for w in covered))
    return tuple("".join(chars) for chars in lines)
