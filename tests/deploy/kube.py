"""Render ``deploy/`` with kustomize and look things up in what it renders.

kustomize is the one built into ``kubectl`` (``kubectl kustomize``, kustomize v5), which the
project's machine image ships; no cluster or network is used. Rendered objects are validated with
``kubernetes-validate`` (the Kubernetes OpenAPI schemas it bundles) and, for custom resources, with
the hand-written CRD schema subsets in ``tests/deploy/crds/``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CRDS = Path(__file__).resolve().parent / "crds"
OVERLAYS = ("local", "production")
COMPONENTS = ("gpu", "autoscaling", "network-policy", "monitoring", "kafka-auth", "vocabulary")
#: Oldest Kubernetes minor the manifests must validate against (matchLabelKeys, sidecar-free),
#: and a recent one.
K8S_VERSIONS = ("1.29", "1.33")

Obj = dict[str, Any]


def kubectl() -> str:
    """The kubectl binary, or skip loudly: the project's machine image ships one."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("DEPLOY TESTS SKIPPED: `kubectl` (with its built-in kustomize v5) is not on "
                    "PATH. The project's machine image ships it (Debian package `kubectl`); "
                    "install kubectl >= 1.27 to run these tests.")
    return found


@functools.cache
def kustomize_version() -> tuple[int, ...]:
    out = subprocess.run([kubectl(), "version", "--client", "-o", "json"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", json.loads(out).get("kustomizeVersion", ""))
    return tuple(int(g) for g in match.groups()) if match else (0,)


@functools.cache
def _render(directory: str) -> tuple[Obj, ...]:
    result = subprocess.run([kubectl(), "kustomize", directory], capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def render(path: Path) -> list[Obj]:
    """Every object kustomize renders from ``path`` (a kustomization directory)."""
    return [dict(o) for o in _render(str(path))]


def overlay(name: str) -> list[Obj]:
    return render(DEPLOY / "overlays" / name)


@functools.cache
def _render_component(component: str) -> tuple[Obj, ...]:
    with tempfile.TemporaryDirectory() as tmp:
        rel = os.path.relpath(DEPLOY, tmp)  # kustomize refuses absolute paths
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"{rel}/base"],
            "components": [f"{rel}/components/{component}"],
        }))
        return _render(tmp)


def base_with_component(component: str) -> list[Obj]:
    """The base with one component, as a user who opts into only that one renders it."""
    return [dict(o) for o in _render_component(component)]


# ---------------------------------------------------------------------------- look-ups


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def config_map(objects: list[Obj], name: str) -> Obj:
    """A ConfigMap by its rendered name (which may carry kustomize's hash suffix)."""
    return one(objects, "ConfigMap", name)


def workloads(objects: list[Obj]) -> Iterator[Obj]:
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            yield o


def workload(objects: list[Obj], component: str) -> Obj:
    found = [w for w in workloads(objects)
             if w["spec"]["template"]["metadata"]["labels"].get(
                 "app.kubernetes.io/component") == component]
    assert len(found) == 1, f"expected one workload for {component}, found {len(found)}"
    return found[0]


def container(work: Obj) -> Obj:
    containers = work["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{work['metadata']['name']}: expected one container"
    return dict(containers[0])


def container_env(objects: list[Obj], work: Obj) -> dict[str, tuple[str, str]]:
    """Every env var of the workload's container → (source, value): source is
    ``configmap:<name>``, ``secret:<name>`` or ``literal``; secrets' values are their key."""
    c = container(work)
    env: dict[str, tuple[str, str]] = {}
    for source in c.get("envFrom", []):
        assert "prefix" not in source, "envFrom prefixes would rename the settings"
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            for key, value in config_map(objects, name).get("data", {}).items():
                env[key] = (f"configmap:{name}", value)
        elif "secretRef" in source:
            name = source["secretRef"]["name"]
            for key in secret_keys(objects, name):
                env[key] = (f"secret:{name}", key)
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = ("literal", var["value"])
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref:
            env[var["name"]] = (f"secret:{ref['secretKeyRef']['name']}",
                                ref["secretKeyRef"]["key"])
        elif "configMapKeyRef" in ref:
            name = ref["configMapKeyRef"]["name"]
            env[var["name"]] = (f"configmap:{name}",
                                config_map(objects, name)["data"][ref["configMapKeyRef"]["key"]])
        else:
            env[var["name"]] = ("other", "")
    return env


def secret_keys(objects: list[Obj], name: str) -> set[str]:
    found = [o for o in of_kind(objects, "Secret") if o["metadata"]["name"] == name]
    if not found:
        return set()
    return set(found[0].get("data", {})) | set(found[0].get("stringData", {}))


def named_port(work: Obj, port: int | str) -> int:
    """A container port given by number or by name."""
    if isinstance(port, int):
        return port
    for p in container(work).get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"{work['metadata']['name']}: no container port named {port}")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable pydantic-settings reads ``field`` of ``settings`` from: its
    ``validation_alias`` (or ``alias``) where it has one, which replaces the prefixed name and
    ignores ``env_prefix`` (``CALLSCRIBE_ASSIST_GROUP_ID``), else ``env_prefix`` + the field
    name. Upper case, as deploy/ writes them; the classes are not case-sensitive."""
    info = settings.model_fields[field]
    alias = info.validation_alias if info.validation_alias is not None else info.alias
    if isinstance(alias, AliasChoices):  # every choice is read; deploy/ sets the first
        alias = next((c for c in alias.choices if isinstance(c, str)), None)
    if alias is not None:
        assert isinstance(alias, str), f"{settings.__name__}.{field}: alias {alias!r}"
        return alias.upper()
    return str(settings.model_config.get("env_prefix", "")).upper() + field.upper()


@functools.cache
def kubernetes_validate() -> Any:
    """The kubernetes-validate module, with its schema-file loader memoised: it otherwise
    re-reads the multi-megabyte definitions file for every object (5x slower)."""
    module = pytest.importorskip(
        "kubernetes_validate",
        reason="DEPLOY SCHEMA TESTS SKIPPED: the dev dependency `kubernetes-validate` is "
        "missing; pip install 'kubernetes-validate>=1.31'",
    )
    module.utils.schema_contents = functools.cache(module.utils.schema_contents)
    return module


def load_crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) → the vendored openAPIV3Schema subset."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        schemas[(f"{doc['group']}/{doc['version']}", doc["kind"])] = doc["schema"]
    return schemas
