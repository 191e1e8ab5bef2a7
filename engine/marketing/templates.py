"""Personal messages of a campaign: one editable template per segment and offer, filled in per contact.

The templates are a CSV file ``segment,offer,template`` (a spreadsheet edits it; a message with commas is quoted).
``*`` (or a blank cell) in ``segment`` or ``offer`` means any. A contact's template is the first of
``(segment, offer)``, ``(*, offer)``, ``(segment, *)``, ``(*, *)`` the file has, so the file can start with one
default line and grow a line per case worth its own words. :data:`DEFAULT_TEMPLATES` ships beside this module.

Templates are :class:`string.Template` text: ``$first_name`` or ``${first_name}`` is the customer's column of
that name, ``$offer`` and ``$segment`` the contact's, ``$$`` a dollar sign. A name that is neither is an error
when the plan is made (:meth:`MessageTemplates.check`), not a message with a hole in it; a customer's empty
value fills in as empty text.
"""

from __future__ import annotations

import csv
import os
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DataFileError

__all__ = ["ANY", "DEFAULT_TEMPLATES", "PLAN_FIELDS", "MessageTemplates"]

#: In a templates file's ``segment`` or ``offer`` cell: any.
ANY = "*"
DEFAULT_TEMPLATES = Path(__file__).with_name("templates.csv")
#: The names a template may use besides the customer's columns.
PLAN_FIELDS = ("offer", "segment")
_HEADER = ("segment", "offer", "template")


def _matches(template: string.Template) -> list[dict[str, str | None]]:
    return [m.groupdict() for m in template.pattern.finditer(template.template)]


def _valid(template: string.Template) -> bool:
    """No ``$`` that starts no name (``Template.is_valid`` of Python 3.11)."""
    return all(m["invalid"] is None for m in _matches(template))


def _names(template: string.Template) -> list[str]:
    """The names a template fills in, in order (``Template.get_identifiers`` of Python 3.11)."""
    return [name for m in _matches(template) if (name := m["named"] or m["braced"]) is not None]


@dataclass(frozen=True)
class _Entry:
    template: string.Template
    line: int


class MessageTemplates:
    """The templates of one file, by ``(segment, offer)``."""

    def __init__(self, entries: Mapping[tuple[str, str], _Entry], source: str) -> None:
        self._entries = dict(entries)
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> MessageTemplates:
        """Read a templates file (default :data:`DEFAULT_TEMPLATES`); a fault is one sentence naming its line."""
        p = Path(path) if path is not None else DEFAULT_TEMPLATES
        if not p.is_file():
            msg = f"{p}: no such templates file"
            raise DataFileError(msg)
        entries: dict[tuple[str, str], _Entry] = {}
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = tuple(h.strip() for h in next(reader, []))
            if header != _HEADER:
                msg = f"{p}: a templates file starts with the header {','.join(_HEADER)}, not {','.join(header)!r}"
                raise DataFileError(msg)
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(_HEADER):
                    msg = f"{p} line {line}: expected 3 cells (segment, offer, template), got {len(row)}"
                    raise DataFileError(msg)
                segment, offer = (row[0].strip() or ANY), (row[1].strip() or ANY)
                template = string.Template(row[2])
                if not _valid(template):
                    msg = f"{p} line {line}: the template has a '$' that starts no name (write $$ for a dollar sign)"
                    raise DataFileError(msg)
                if (segment, offer) in entries:
                    first = entries[segment, offer].line
                    msg = f"{p} line {line}: segment {segment!r}, offer {offer!r} already has a template (line {first})"
                    raise DataFileError(msg)
                entries[segment, offer] = _Entry(template, line)
        if not entries:
            msg = f"{p}: the templates file has no templates"
            raise DataFileError(msg)
        return cls(entries, str(p))

    def _entry(self, segment: str, offer: str) -> _Entry | None:
        for key in ((segment, offer), (ANY, offer), (segment, ANY), (ANY, ANY)):
            if key in self._entries:
                return self._entries[key]
        return None

    def check(self, columns: Collection[str], offers: Collection[str]) -> None:
        """One sentence for the first template that could serve one of ``offers`` and names something that is
        neither one of the customer ``columns`` nor a plan field; for an offer no template serves, without a
        ``*,*`` default."""
        known = set(columns) | set(PLAN_FIELDS)
        for (_, offer), entry in self._entries.items():
            if offer != ANY and offer not in offers:
                continue
            unknown = [name for name in _names(entry.template) if name not in known]
            if unknown:
                msg = (
                    f"{self.source} line {entry.line}: the template names ${unknown[0]}, which is not a column of the "
                    f"customers nor one of {', '.join('$' + f for f in PLAN_FIELDS)}"
                )
                raise DataFileError(msg)
        for offer in offers:
            if not any(o in (offer, ANY) for _, o in self._entries):
                msg = f"{self.source}: no template serves offer {offer!r} (add a line for it, or a default *,*)"
                raise DataFileError(msg)

    def render(self, segment: str, offer: str, fields: Mapping[str, object]) -> str:
        """The message of a contact: its template filled with ``fields`` (None as empty text)."""
        entry = self._entry(segment, offer)
        if entry is None:
            msg = f"{self.source}: no template serves segment {segment!r} and offer {offer!r}, and there is no *,*"
            raise DataFileError(msg)
        values = {k: "" if v is None else v for k, v in fields.items()}
        return entry.template.safe_substitute(values, offer=offer, segment=segment)
