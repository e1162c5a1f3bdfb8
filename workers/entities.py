"""The PII/PCI entity types callscribe redacts, and how ``CALLSCRIBE_REDACT`` names them.

Each type is the placeholder the redacted transcripts carry (``[CARD]``, ``[CVV]``, ...) and the
``entity`` label of ``callscribe_assist_redactions_total``. It lives here, apart from the
redactor (:mod:`workers.assist.redact`), so that the settings can check
``CALLSCRIBE_REDACT`` without importing the assist worker.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every entity type, in the order placeholders are documented.
ENTITIES: tuple[str, ...] = ("CARD", "CVV", "EXPIRY", "SSN", "EMAIL", "PHONE")


def parse_entities(value: str | Iterable[str]) -> frozenset[str]:
    """``"all"`` (or empty: redaction is never switched off by accident), ``"none"``, or a
    comma-separated list of :data:`ENTITIES`, case-insensitive; :class:`ValueError` names
    unknown ones."""
    if isinstance(value, str):
        if value.strip().lower() in ("", "all"):
            return frozenset(ENTITIES)
        if value.strip().lower() == "none":
            return frozenset()
        value = value.split(",")
    names = [n.strip().upper() for n in value if n.strip()]
    unknown = [n for n in names if n not in ENTITIES]
    if unknown:
        raise ValueError(f"unknown redaction entities {', '.join(unknown)}; expected 'all', "
                         f"'none' or a comma-separated list of {', '.join(ENTITIES)}")
    return frozenset(names)


__all__ = ["ENTITIES", "parse_entities"]
