"""docs/deploy.md stays true to deploy/: the paths it names exist and its object counts are
what the overlays render."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from tests.deploy.kube import OVERLAYS, ROOT, overlay

DOC = ROOT / "docs" / "deploy.md"


def test_paths_named_in_the_doc_exist() -> None:
    text = DOC.read_text()
    # deploy/callscribe-… is kubectl's name for a Deployment, not a path.
    paths = set(re.findall(r"(?<![\w/])deploy/(?!callscribe-)[\w./-]*[\w/]", text))
    assert paths
    for path in sorted(paths):
        assert (ROOT / path).exists(), f"docs/deploy.md names {path}, which does not exist"


@pytest.mark.parametrize("name", OVERLAYS)
def test_rendered_object_counts_in_the_doc(name: str) -> None:
    row = re.search(rf"^\| `{name}` \| (\d+): (.+) \|$", DOC.read_text(), re.MULTILINE)
    assert row, f"docs/deploy.md has no object count row for overlay {name}"
    total, listed = int(row.group(1)), row.group(2)
    documented = Counter({kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", listed)})
    rendered = Counter(o["kind"] for o in overlay(name))
    assert (total, documented) == (sum(rendered.values()), rendered), (
        f"update the table in docs/deploy.md: {name} renders {sum(rendered.values())}: "
        + ", ".join(f"{n} {k}" for k, n in sorted(rendered.items())))
