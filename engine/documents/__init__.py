"""Identity-document checks: the machine readable zone (ICAO 9303) found, read and checked on a page image."""

from __future__ import annotations

from engine.documents.mrz import LAYOUTS, Mrz, MrzFields, check_digit, compose, parse

__all__ = ["LAYOUTS", "Mrz", "MrzFields", "check_digit", "compose", "parse"]
