"""deploy/Dockerfile and .dockerignore, checked statically (no Docker engine in the test run):
multi-stage, pinned bases, non-root numeric user, read-only-root friendly, `callscribe`
entrypoint, the workers' ports, CPU and CUDA variants."""

from __future__ import annotations

import json
import re

from tests.deploy.dockerfile import DOCKERFILE, DOCKERIGNORE, dockerfile_uid, env_of, parse, resolve
from workers.settings import AssistSettings, BridgeSettings, IngestSettings, TranscribeSettings


def test_multi_stage_with_a_slim_runtime() -> None:
    df = parse()
    names = [s.name for s in df.stages]
    assert len(df.stages) >= 2 and len(set(names)) == len(names)
    runtime = df.stages[-1]
    assert runtime.name == "runtime"
    copies = runtime.all("COPY")
    assert any(c.startswith("--from=build ") for c in copies), "runtime copies the built venv"
    for c in copies:
        assert c.startswith("--from="), f"the runtime stage copies only from stages: {c}"
    assert not runtime.all("RUN") or all("apt-get install" not in r for r in runtime.all("RUN")), (
        "no build tools in the runtime stage")


def test_bases_are_pinned_never_latest() -> None:
    df = parse()
    stage_names = {s.name for s in df.stages}
    for stage in df.stages:
        base = resolve(stage.base, df.args)
        if base == "scratch" or base in stage_names:
            continue
        assert "$" not in base, f"{stage.base}: an ARG without a default"
        if "@sha256:" in base:
            continue  # pinned by digest
        tag = base.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{base}: pin a version tag or a digest"
        assert re.search(r"\d", tag), f"{base}: pin a version, not a moving name"
    for line in DOCKERFILE.read_text().splitlines():
        assert not re.search(r":latest\b", line), line


def test_runs_as_a_non_root_numeric_user() -> None:
    assert dockerfile_uid() == 10001
    runtime = parse().stages[-1]
    run = " ".join(runtime.all("RUN"))
    assert "--uid 10001" in run and "--gid 10001" in run
    # USER is set after every RUN: nothing after it runs as root.
    keywords = [kw for kw, _ in runtime.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")


def test_read_only_root_friendly() -> None:
    env = env_of(parse().stages[-1])
    # Everything a worker or its libraries write goes under /tmp (an emptyDir in Kubernetes).
    for key in ("HOME", "XDG_CACHE_HOME", "HF_HOME", "APP_DATADIR"):
        assert env[key] == "/tmp" or env[key].startswith("/tmp/"), key
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1", "no model downloads at run time"
    build_runs = " ".join(parse().stages[1].all("RUN"))
    assert "compileall" in build_runs, "byte-code is compiled at build time, not at run time"


def test_entrypoint_and_ports() -> None:
    runtime = parse().stages[-1]
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["callscribe"]
    (expose,) = runtime.all("EXPOSE")
    defaults = {IngestSettings.model_fields["ingest_port"].default,
                TranscribeSettings.model_fields["web_port"].default,
                BridgeSettings.model_fields["bridge_port"].default,
                AssistSettings.model_fields["web_port"].default}
    assert {int(p) for p in expose.split()} == defaults
    assert not runtime.all("HEALTHCHECK"), "Kubernetes probes the workers' own endpoints"


def test_cpu_and_cuda_variants() -> None:
    df = parse()
    assert df.args["VARIANT"] == "cpu"
    build = next(s for s in df.stages if s.name == "build")
    run = " ".join(build.all("RUN"))
    assert "cuda)" in run and "cpu)" in run and "nvidia-cudnn-cu12" in run
    assert "nvidia-cublas-cu12" in run
    env = env_of(df.stages[-1])
    assert "nvidia/cudnn/lib" in env["LD_LIBRARY_PATH"]
    # A larger model can be baked in through the `models` named build context.
    models = next(s for s in df.stages if s.name == "models")
    assert models.base == "scratch"
    assert any(c.startswith("--from=models ") for c in df.stages[-1].all("COPY"))


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "**", "exclude everything, then admit what the image needs"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert admitted == {"pyproject.toml", "README.md", "workers"}
    copied: set[str] = set()
    for stage in parse().stages:
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _dest = args.split()
            copied |= {s.rstrip("/") for s in sources}
    assert copied == admitted
