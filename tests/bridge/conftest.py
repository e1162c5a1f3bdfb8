"""Bridge tests: ``test_asyncapi.py`` runs after every other test here, so that it can check
the message types they saw on the wire (``tests.bridge.wire.SEEN``) against the AsyncAPI
document."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    last = [item for item in items if item.path.name == "test_asyncapi.py"]
    if last:
        items[:] = [item for item in items if item.path.name != "test_asyncapi.py"] + last
