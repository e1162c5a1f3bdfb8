"""pyproject.toml as current setuptools wants it: ``project.license`` an SPDX string (a table
is deprecated, an error from February 2027) and a setuptools that reads it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def test_the_build_needs_a_setuptools_that_reads_it() -> None:
    (requirement,) = [r for r in PYPROJECT["build-system"]["requires"] if "setuptools" in r]
    match = re.fullmatch(r"setuptools>=(\d+)", requirement)
    assert match and int(match[1]) >= 77, requirement
