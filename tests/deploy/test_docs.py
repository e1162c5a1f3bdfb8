"""docs/deploy.md stays true to deploy/: the paths it names exist, its object counts are what
the overlays render, and its custom playbook example works."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.deploy.kube import (
    DEPLOY,
    K8S_VERSIONS,
    OVERLAYS,
    ROOT,
    container,
    container_env,
    kubernetes_validate,
    one,
    overlay,
    render,
    workload,
)

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


def test_the_custom_playbook_recipe_renders_and_loads(tmp_path: Path) -> None:
    """The "Agent assist" snippet: on the base it renders a valid Deployment that mounts a
    playbook and articles where CALLSCRIBE_PLAYBOOK / CALLSCRIBE_KB_DIR point, and the worker
    loads them from that layout."""
    from workers.assist.app import build_engine, example_path
    from workers.settings import AssistSettings

    snippet = re.search(r"```yaml\n# kustomization\.yaml of your overlay\n(.*?)```",
                        DOC.read_text(), re.DOTALL)
    assert snippet, "docs/deploy.md lost its custom playbook example"
    overlay_dir = tmp_path / "overlay"
    (overlay_dir / "kb").mkdir(parents=True)
    spec = yaml.safe_load(snippet.group(1))
    (generated,) = [g for g in spec["configMapGenerator"] if "files" in g]
    articles = sorted(example_path("kb").glob("*.md"))
    for name in generated["files"]:
        source = example_path("playbook.yaml") if name.endswith(".yaml") else articles.pop()
        (overlay_dir / name).write_text(source.read_text())
    base = os.path.relpath(DEPLOY / "base", overlay_dir)  # kustomize refuses absolute paths
    (overlay_dir / "kustomization.yaml").write_text(
        f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{base}]\n" + snippet.group(1))
    objects = render(overlay_dir)
    assist = workload(objects, "assist")
    validator = kubernetes_validate()
    for version in K8S_VERSIONS:
        validator.validate(assist, version, strict=True)
    env = {k: v for k, (_, v) in container_env(objects, assist).items()}
    volumes = {v["name"]: v for v in assist["spec"]["template"]["spec"]["volumes"]}
    # Lay the mounts out under tmp_path as the kubelet would in the container.
    root = tmp_path / "container"
    for mount in container(assist)["volumeMounts"]:
        configmap = volumes[mount["name"]].get("configMap")
        if configmap is None:
            continue
        data = one(objects, "ConfigMap", configmap["name"])["data"]
        target = root / mount["mountPath"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[mount["subPath"]])
    playbook, kb_dir = env["CALLSCRIBE_PLAYBOOK"], env["CALLSCRIBE_KB_DIR"]
    settings = AssistSettings(playbook=root / playbook.lstrip("/"),
                              kb_dir=root / kb_dir.lstrip("/"))
    engine = build_engine(settings)
    assert engine.kb is not None
    assert len(engine.kb.articles) == len(generated["files"]) - 1
