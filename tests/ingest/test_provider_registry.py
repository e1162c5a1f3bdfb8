"""A provider is one module: the registry knows each provider by path and name, refuses a
duplicate, and the server, session and control modules name no provider in their code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from workers.ingest import providers
from workers.ingest.providers.base import Provider
from workers.ingest.providers.registry import register

INGEST = Path(__file__).parents[2] / "workers" / "ingest"
NAMES = ("jambonz", "plivo", "twilio", "bland", "audiohook", "vonage", "genesys", "telnyx")


def test_every_provider_is_registered_by_path_and_name() -> None:
    assert set(providers.paths()) == {"/jambonz", "/plivo", "/twilio", "/audiohook", "/vonage",
                                      "/telnyx"}
    for provider in providers.providers():
        assert providers.by_name(provider.name) is provider
        for path in provider.paths:
            assert providers.by_path(path) is provider
    assert providers.by_name("bland") is not None and not providers.by_name("bland").paths


def test_a_duplicate_name_or_path_is_refused() -> None:
    codec = providers.by_name("twilio").codec  # type: ignore[union-attr]  # registered: not None
    with pytest.raises(ValueError, match="registered twice"):
        register(Provider(name="twilio", codec=codec))
    with pytest.raises(ValueError, match="is taken by"):
        register(Provider(name="x-new", paths=("/plivo",), codec=codec))


@pytest.mark.parametrize("module", ["server.py", "session.py", "control.py", "executor.py"])
def test_the_adapters_hold_no_provider_names(module: str) -> None:
    """Identifiers and string literals (docstrings aside) never name a provider."""
    tree = ast.parse((INGEST / module).read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            text = node.value.lower()
        elif isinstance(node, ast.Name | ast.alias | ast.Attribute):
            text = (getattr(node, "id", None) or getattr(node, "name", None)
                    or getattr(node, "attr", "")).lower()
        else:
            continue
        found += [name for name in NAMES if name in text]
    assert not found, f"{module} names providers: {sorted(set(found))}"
