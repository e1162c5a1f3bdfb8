"""Validate produced records against ``schemas/``: ``validate("transcripts", record)``.

Formats are checked, including ``date-time`` (RFC 3339), which jsonschema only checks when an
optional package is installed; here it is checked without one.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE
)

FORMAT_CHECKER = FormatChecker()


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    datetime.fromisoformat(value.upper())  # raises ValueError on e.g. month 13
    return True


def schema_names() -> list[str]:
    """Every schema in ``schemas/``, by short name (``calls``, ``transcripts``, ...)."""
    return sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))


@functools.cache
def load(schema_name: str) -> dict[str, Any]:
    """The parsed schema ``schemas/<schema_name>.schema.json``."""
    name = schema_name.removesuffix(".schema.json")
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    return schema


@functools.cache
def registry() -> Registry:
    """Every schema by its ``$id``, so that one may ``$ref`` another."""
    resources = [(load(n)["$id"], Resource.from_contents(load(n))) for n in schema_names()]
    return Registry().with_resources(resources)


@functools.cache
def validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator(load(schema_name), format_checker=FORMAT_CHECKER,
                                registry=registry())


def validate(schema_name: str, instance: Any) -> None:
    """Raise ``jsonschema.ValidationError`` (the most relevant error) unless valid."""
    validator(schema_name).validate(instance)


def headers_to_json(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Kafka headers as the object ``audio-headers`` describes."""
    return {key: bytes(value).decode("ascii") for key, value in headers}
