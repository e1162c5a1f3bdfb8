"""deploy/ sets every setting the code reads, from a ConfigMap or a Secret, and its ports and
probe paths are the ones the workers serve (workers/settings.py, the servers' routes)."""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import pytest
from pydantic_settings import BaseSettings

from tests.deploy.kube import (
    DEPLOY,
    OVERLAYS,
    ROOT,
    Obj,
    container,
    container_env,
    env_name,
    named_port,
    of_kind,
    overlay,
    render,
    secret_keys,
    selects,
    workload,
)
from workers.settings import AssistSettings, BridgeSettings, IngestSettings, TranscribeSettings

#: Ports a worker serves besides its main one (probes and metrics): component → port fields.
EXTRA_PORTS: dict[str, tuple[str, ...]] = {"ingest": ("ingest_api_port",)}
#: component → (its settings class, the field that is its HTTP port).
WORKERS: dict[str, tuple[type[BaseSettings], str]] = {
    "ingest": (IngestSettings, "ingest_port"),
    "transcribe": (TranscribeSettings, "web_port"),
    "bridge": (BridgeSettings, "bridge_port"),
    "assist": (AssistSettings, "web_port"),
}
#: Settings a worker defines but that deploy/ leaves unset on purpose, and why.
NOT_NEEDED = {
    "broker_port": "the embedded broker's port (`callscribe broker`, `up`); in Kubernetes "
                   "CALLSCRIBE_KAFKA_BOOTSTRAP names the Kafka cluster",
    "whisper_chunk_s": "optional: unset is the model's own 30 s window (the default), and an "
                       "empty value is not accepted for an int",
    "data_dir": "optional: unset is a folder in the system temp directory (an emptyDir in the "
                "pod)",
    "playbook": "optional: unset is the example playbook bundled in the image "
                "(workers/assist/examples/playbook.yaml); an empty value is the path '.', not "
                "unset. Set it with a mounted playbook (docs/deploy.md, \"Agent assist\")",
    "kb_dir": "optional: unset is the example articles bundled in the image "
              "(workers/assist/examples/kb); an empty value is the path '.', not unset. Set it "
              "with mounted articles (docs/deploy.md, \"Agent assist\")",
    "kafka_sasl_username": "deploy/ reads the Kafka username from a mounted file "
                           "(CALLSCRIBE_KAFKA_SASL_USERNAME_FILE, components/kafka-auth); the "
                           "variable is for running outside Kubernetes",
    "kafka_sasl_password": "deploy/ reads the Kafka password from the KafkaUser Secret, mounted "
                           "(CALLSCRIBE_KAFKA_SASL_PASSWORD_FILE, components/kafka-auth), so it "
                           "is never in the environment",
}
#: Read by workers/logs.py in every worker, outside the settings classes.
LOG_VARS = {"CALLSCRIBE_LOG_FORMAT", "CALLSCRIBE_LOG_LEVEL"}
#: Env vars the code names outside the settings classes that no worker in Kubernetes reads.
NOT_READ_BY_WORKERS = {
    "CALLSCRIBE_LOG_DIR": "where `callscribe up` writes its children's logs; not a worker setting",
    "CALLSCRIBE_DEBUG": "tracebacks from the `callscribe` command line; not a worker setting",
    "CALLSCRIBE_BRIDGE_URL": "where `watch`/`calls`/`simulate` find the bridge (.callscribe/env)",
    "CALLSCRIBE_INGEST_URL": "where `simulate` finds the ingest worker (.callscribe/env)",
    "CALLSCRIBE_INGEST_API_URL": "where `simulate bland` subscribes (.callscribe/env)",
}
#: Credentials: from a Secret, never a ConfigMap.
SECRETS = {"api_keys", "token_secret", "jambonz_username", "jambonz_password",
           "plivo_auth_token", "twilio_auth_token", "jambonz_api_key", "bland_api_key",
           "audiohook_api_key", "audiohook_client_secret", "vonage_token", "telnyx_token",
           "telnyx_api_key", "vonage_private_key"}
SECRET_NAME = "callscribe-secrets"
#: Secrets a placeholder string cannot stand in for, and the value they load with instead.
SECRET_PLACEHOLDERS = {
    # A PEM RSA key, and only with CALLSCRIBE_VONAGE_APPLICATION_ID (empty in the ConfigMap):
    # an optional key left out, as a deployment without Vonage call control has it.
    "CALLSCRIBE_VONAGE_PRIVATE_KEY": "",
}
PROBES = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}


def needed(component: str) -> set[str]:
    settings, _ = WORKERS[component]
    skipped = set(NOT_NEEDED)
    return {env_name(settings, f) for f in settings.model_fields if f not in skipped} | LOG_VARS


def secret_vars(settings: type[BaseSettings]) -> set[str]:
    return {env_name(settings, f) for f in SECRETS if f in settings.model_fields}


def test_env_name_honours_validation_alias() -> None:
    assert env_name(TranscribeSettings, "group_id") == "CALLSCRIBE_TRANSCRIBE_GROUP_ID"
    assert env_name(AssistSettings, "group_id") == "CALLSCRIBE_ASSIST_GROUP_ID"
    assert env_name(AssistSettings, "web_port") == "CALLSCRIBE_ASSIST_WEB_PORT"
    assert env_name(AssistSettings, "idle_timeout_s") == "CALLSCRIBE_ASSIST_IDLE_TIMEOUT_S"
    assert env_name(AssistSettings, "redact") == "CALLSCRIBE_REDACT"


def test_every_worker_settings_class_is_deployed() -> None:
    """A new worker (a new settings class) needs its Deployment in deploy/base."""
    import workers.settings

    classes = {c for c in vars(workers.settings).values()
               if isinstance(c, type) and issubclass(c, BaseSettings) and c is not BaseSettings
               and c.__module__ == workers.settings.__name__}
    shared = {workers.settings.KafkaSettings}  # the base every worker's class extends
    deployed = {settings for settings, _ in WORKERS.values()}
    assert classes - shared == deployed, (
        f"settings classes without a workload in deploy/: {classes - shared - deployed}")


def test_settings_classes_use_the_documented_prefix() -> None:
    for settings, _ in WORKERS.values():
        assert settings.model_config.get("env_prefix") == "CALLSCRIBE_", settings
        assert not settings.model_config.get("case_sensitive"), settings
        for field in settings.model_fields:
            # An alias replaces the prefixed name, prefix and all.
            assert env_name(settings, field).startswith("CALLSCRIBE_"), (settings, field)


def test_a_variable_means_one_thing_in_every_worker() -> None:
    """Workers that share a variable (the common ConfigMap, `callscribe up`'s one environment)
    read it into the same field; two fields of one worker never share a variable."""
    meaning: dict[str, str] = {}
    for settings, _ in WORKERS.values():
        names = [env_name(settings, f) for f in settings.model_fields]
        assert len(names) == len(set(names)), settings
        for field in settings.model_fields:
            var = env_name(settings, field)
            assert meaning.setdefault(var, field) == field, (
                f"{var} is {meaning[var]} in one worker and {field} in {settings.__name__}")


def test_every_credential_like_setting_is_treated_as_a_secret() -> None:
    for settings, _ in WORKERS.values():
        for field in settings.model_fields:
            if field.endswith(("_file", "_command")) or field in NOT_NEEDED:
                continue  # the path of a mounted secret, a token helper; or not in deploy/
            if re.search(r"key|secret|password|username|token(?!_ttl|s\b)", field):
                assert field in SECRETS, f"{field} looks like a credential: add it to SECRETS"


def test_every_env_var_the_code_names_is_known() -> None:
    """A CALLSCRIBE_* variable that appears in the code and is no settings field must be set by
    deploy/ (LOG_VARS) or be listed here with the reason it is not."""
    fields = {env_name(settings, f) for settings, _ in WORKERS.values()
              for f in settings.model_fields}
    # The old names of renamed settings, still read (with a warning) for one release.
    fields |= {old for settings, _ in WORKERS.values()
               for old in getattr(settings, "renamed", {}).values()}
    named: set[str] = set()
    for path in (ROOT / "workers").rglob("*.py"):
        named |= set(re.findall(r"CALLSCRIBE_[A-Z][A-Z0-9_]*[A-Z0-9]", path.read_text()))
    unknown = named - fields - LOG_VARS - set(NOT_READ_BY_WORKERS)
    # "CALLSCRIBE_INGEST_HOST / _PORT" style mentions name a field's prefix only.
    unknown = {n for n in unknown if not any(f.startswith(n + "_") for f in fields)}
    assert not unknown, f"env vars read by the code that deploy/ does not handle: {unknown}"


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("component", WORKERS)
def test_worker_gets_every_setting_from_a_configmap_or_secret(name: str, component: str) -> None:
    objects = overlay(name)
    w = workload(objects, component)
    env = {k: v for k, v in container_env(objects, w).items() if k.startswith("CALLSCRIBE_")}
    missing = needed(component) - set(env)
    assert not missing, f"{name}/{component} does not set {sorted(missing)}"
    extra = set(env) - needed(component)
    assert not extra, f"{name}/{component} sets {sorted(extra)}, which it never reads"
    secrets = secret_vars(WORKERS[component][0])
    for var, (source, _value) in env.items():
        if var in secrets:
            assert source == f"secret:{_secret_name(objects)}", (var, source)
        else:
            assert source.startswith("configmap:"), f"{var} must come from a ConfigMap: {source}"
    secret = _secret_name(objects)
    if of_kind(objects, "Secret"):
        referenced = {value for source, value in env.values() if source.startswith("secret:")}
        assert referenced <= secret_keys(objects, secret)


#: Base values that differ from the code's defaults on purpose.
DELIBERATE = {
    "kafka_bootstrap": "the Strimzi cluster of deploy/kafka, not the embedded broker",
    "topic_replication": "three replicas, as the KafkaTopics in deploy/topics",
    "cpu_threads": "the container's CPU request, not every core of the node",
    "fetch_max_wait_ms": "Kafka answers a fetch as soon as data is there: 500 ms costs no "
                         "latency and saves empty fetches (20 ms is for the embedded broker)",
}


@pytest.mark.parametrize("component", WORKERS)
def test_base_values_are_the_code_defaults_unless_deliberate(
        component: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """So that a default changed in workers/settings.py is not silently pinned by deploy/."""
    objects = render(DEPLOY / "base")
    settings_class, _ = WORKERS[component]
    env = container_env(objects, workload(objects, component))
    settings = _load(settings_class, env, monkeypatch)
    for field, info in settings_class.model_fields.items():
        var = env_name(settings_class, field)
        if var not in env or field in DELIBERATE or field in SECRETS:
            continue
        value = getattr(settings, field)
        if field in ("whisper_model", "vocabulary"):
            value = value or None  # empty = the bundled model / no vocabulary, as unset
        assert value == info.default, (
            f"deploy/base sets {var}={value!r}; the code's default is "
            f"{info.default!r}. Update deploy/base/config/ or list it in DELIBERATE.")


def _load(settings_class: type[BaseSettings], env: dict[str, tuple[str, str]],
          monkeypatch: pytest.MonkeyPatch) -> BaseSettings:
    """The settings the worker would load from this container env (secrets: placeholders)."""
    for var in [v for v in os.environ if v.startswith("CALLSCRIBE_")]:
        monkeypatch.delenv(var)
    for var, (source, value) in env.items():
        # Long enough for every check (the token secret must be >= 32 bytes).
        monkeypatch.setenv(var, SECRET_PLACEHOLDERS.get(
            var, "placeholder-secret-value-at-least-32-bytes")
            if source.startswith("secret:") else value)
    return settings_class()  # validates every value against the settings class


def _secret_name(objects: list[Obj]) -> str:
    """callscribe-secrets, or the name kustomize gave the one the overlay generates."""
    for secret in of_kind(objects, "Secret"):
        if secret["metadata"]["name"].startswith(SECRET_NAME):
            return str(secret["metadata"]["name"])
    return SECRET_NAME


@pytest.mark.parametrize("name", OVERLAYS)
@pytest.mark.parametrize("component", WORKERS)
def test_rendered_settings_load_and_ports_match_the_code(
        name: str, component: str, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = overlay(name)
    w = workload(objects, component)
    settings_class, port_field = WORKERS[component]
    settings = _load(settings_class, container_env(objects, w), monkeypatch)
    port = getattr(settings, port_field)
    assert port == settings_class.model_fields[port_field].default, (
        f"{component} listens on {port}, not the code's default")
    c = container(w)
    extra = [getattr(settings, f) for f in EXTRA_PORTS.get(component, ())]
    assert extra == [settings_class.model_fields[f].default
                     for f in EXTRA_PORTS.get(component, ())]
    assert [p["containerPort"] for p in c["ports"]] == [port, *extra]
    for probe, path in PROBES.items():
        check = c[probe]["httpGet"]
        assert check["path"] == path, (component, probe)
        assert named_port(w, check["port"]) == port, (component, probe)
    labels = w["spec"]["template"]["metadata"]["labels"]
    for service in of_kind(objects, "Service"):
        if selects(service["spec"]["selector"], labels):
            served = {named_port(w, p["targetPort"]) for p in service["spec"]["ports"]}
            assert port in served and served <= {port, *extra}, (component, served)
    host_field = {"ingest": "ingest_host", "bridge": "bridge_host"}.get(component)
    if host_field:
        assert getattr(settings, host_field) == "0.0.0.0", "bind all addresses in a pod"
    assert settings.kafka_bootstrap, "without it the worker looks for an embedded broker"
    if isinstance(settings, AssistSettings):
        _assist_app_serves(settings)


def _assist_app_serves(settings: AssistSettings) -> None:
    """The assist worker's faust app, built from the rendered settings (nothing connects to
    Kafka), serves the probe and metrics paths on all addresses at the port the Deployment
    names, and consumes as the group the autoscaler watches."""
    from workers.assist.app import build_engine, create_app

    # The Kafka credentials are files mounted in the pod (components/kafka-auth), which this
    # test does not have; tests/test_kafka_security.py covers the credentials faust gets.
    settings = settings.model_copy(update={
        "kafka_security_protocol": "PLAINTEXT", "kafka_sasl_mechanism": None,
        "kafka_sasl_username_file": None, "kafka_sasl_password_file": None,
        "kafka_ssl_ca_file": None})
    app = create_app(settings, build_engine(settings))
    assert app.conf.web_port == settings.web_port
    assert app.conf.web_bind == "0.0.0.0", "bind all addresses in a pod"
    assert app.conf.id == settings.group_id
    assert {*PROBES.values(), "/metrics"} <= set(app.web.views)


def test_production_documents_the_secret_it_expects() -> None:
    objects = overlay("production")
    assert not of_kind(objects, "Secret"), "production Secrets come from a secret manager"
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert SECRET_NAME in doc
    for component in WORKERS:
        env = container_env(objects, workload(objects, component))
        for source, key in env.values():
            if source.startswith("secret:"):
                assert key in doc, f"docs/deploy.md must tell how to set {key}"


# ----------------------------------------------------------------- what the workers serve


def test_workers_serve_the_probe_and_metrics_paths() -> None:
    """The paths the probes and the ServiceMonitor use exist in the workers' servers."""
    from http import HTTPStatus

    from websockets.datastructures import Headers
    from websockets.http11 import Request

    from workers.bridge.hub import CallHub
    from workers.bridge.server import Bridge
    from workers.bridge.tokens import TokenIssuer
    from workers.ingest.server import IngestServer
    from workers.records import Topics

    ingest = IngestServer.__new__(IngestServer)  # no producer or socket: routing only
    ingest._broker_reachable = None  # no Kafka probe: routing only
    ingest.ready = True
    kafka_answers = True
    ingest._broker_reachable = lambda: kafka_answers
    for path in ("/healthz", "/readyz", "/metrics"):
        # Routing only: no connection is needed (hence None).
        response = ingest._process_request(None, Request(path, Headers()))  # type: ignore[arg-type]  # see above
        assert response is not None and response.status_code == HTTPStatus.OK, path
    kafka_answers = False  # readiness, never liveness, depends on Kafka
    for path, status in (("/readyz", HTTPStatus.SERVICE_UNAVAILABLE),
                         ("/healthz", HTTPStatus.OK)):
        response = ingest._process_request(None, Request(path, Headers()))  # type: ignore[arg-type]
        assert response is not None and response.status_code == status, path
    kafka_answers = True
    ingest.ready = False
    response = ingest._process_request(None, Request("/readyz", Headers()))  # type: ignore[arg-type]  # as above
    assert response is not None and response.status_code == HTTPStatus.SERVICE_UNAVAILABLE

    # Constructed (nothing connects or starts until start()), so that its routes exist.
    bridge = Bridge(bootstrap="127.0.0.1:9", topics=Topics(), api_keys=frozenset({"k"}),
                    issuer=TokenIssuer("x" * 32), hub=CallHub())
    routes = {(r.method, r.resource.canonical) for r in bridge.web_app().router.routes()
              if r.resource is not None}
    for path in ("/healthz", "/readyz", "/metrics"):
        assert ("GET", path) in routes, path

    # The transcriber's faust app (built, never run: no model is loaded).
    from workers.transcribe.app import create_app

    settings = TranscribeSettings(CALLSCRIBE_TRANSCRIBE_WEB_PORT=18081)
    app = create_app(settings, SimpleNamespace(decode=None, lanes=1))  # type: ignore[arg-type]  # no model
    assert app.conf.web_port == settings.web_port == 18081
    assert app.conf.web_bind == "0.0.0.0", "bind all addresses in a pod"
    assert {"/healthz", "/readyz", "/metrics"} <= set(app.web.views)
    # The assist worker's faust app is built from each overlay's rendered settings and its
    # pages checked in test_rendered_settings_load_and_ports_match_the_code.


def test_configmaps_hold_no_credentials() -> None:
    credentials = set().union(*(secret_vars(settings) for settings, _ in WORKERS.values()))
    for name in OVERLAYS:
        objects = overlay(name)
        for cm in of_kind(objects, "ConfigMap"):
            for key in cm.get("data", {}):
                field = key.removeprefix("CALLSCRIBE_").lower()
                assert field not in SECRETS and key not in credentials, (
                    f"{name}: {key} in ConfigMap {cm['metadata']['name']}")


def test_only_the_local_overlay_accepts_anonymous_provider_audio() -> None:
    """Production refuses provider connections without credentials at the handshake
    (docs/security.md); the jambonz Basic credentials are required keys of its Secret."""
    for name, allowed in (("local", "true"), ("production", "false")):
        objects = overlay(name)
        env = container_env(objects, workload(objects, "ingest"))
        assert env["CALLSCRIBE_INGEST_ALLOW_ANONYMOUS"][1] == allowed, name
    base = render(DEPLOY / "base")
    assert container_env(base, workload(base, "ingest"))[
        "CALLSCRIBE_INGEST_ALLOW_ANONYMOUS"][1] == "false"
    production = overlay("production")
    refs = {v["name"]: v["valueFrom"]["secretKeyRef"]
            for v in container(workload(production, "ingest")).get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})}
    for key in ("CALLSCRIBE_JAMBONZ_USERNAME", "CALLSCRIBE_JAMBONZ_PASSWORD"):
        assert not refs[key].get("optional"), f"{key} must be required in production"
