"""deploy/: every overlay and component renders, validates, and agrees with the code.

Schemas: the Kubernetes OpenAPI schemas bundled in ``kubernetes-validate`` (strict: unknown
fields fail) for built-in kinds; ``tests/deploy/crds/`` (hand-written subsets) for Strimzi, KEDA
and the Prometheus Operator. A kind with neither fails the test.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from tests.deploy.dockerfile import dockerfile_uid
from tests.deploy.kube import (
    COMPONENTS,
    K8S_VERSIONS,
    OVERLAYS,
    Obj,
    base_with_component,
    config_map,
    container,
    container_env,
    env_name,
    kubernetes_validate,
    kustomize_version,
    load_crd_schemas,
    of_kind,
    one,
    overlay,
    selects,
    workload,
    workloads,
)
from workers import deadline
from workers.settings import AssistSettings, BridgeSettings, TranscribeSettings
from workers.vocabulary import load_vocabulary

WORKER_COMPONENTS = ("ingest", "transcribe", "bridge", "assist")


def _all_renders() -> list[tuple[str, list[Obj]]]:
    renders = [(f"overlays/{name}", overlay(name)) for name in OVERLAYS]
    renders += [(f"base+components/{name}", base_with_component(name)) for name in COMPONENTS]
    return renders


@pytest.fixture(scope="module")
def renders() -> list[tuple[str, list[Obj]]]:
    return _all_renders()


# ------------------------------------------------------------------------------- render


def test_kustomize_is_v5() -> None:
    assert kustomize_version() >= (5, 0, 0), "components and `labels` need kustomize v5"


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_renders_the_whole_system(name: str) -> None:
    objects = overlay(name)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
            "PodDisruptionBudget", "Kafka", "KafkaNodePool", "KafkaTopic"} <= kinds
    assert {w["metadata"]["name"] for w in workloads(objects)} == {
        f"callscribe-{c}" for c in WORKER_COMPONENTS}
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
            for o in objects]
    assert len(keys) == len(set(keys)), "an object is rendered twice"


def test_production_uses_every_component() -> None:
    kinds = {o["kind"] for o in overlay("production")}
    assert {"ScaledObject", "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor",
            "Ingress"} <= kinds


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_renders_on_the_base_alone(component: str) -> None:
    objects = base_with_component(component)
    assert len(list(workloads(objects))) == len(WORKER_COMPONENTS)


def test_every_namespaced_object_names_its_namespace(renders: list[tuple[str, list[Obj]]]) -> None:
    cluster_scoped = {"Namespace"}
    for where, objects in renders:
        for o in objects:
            if o["kind"] not in cluster_scoped:
                assert o["metadata"].get("namespace"), (
                    f"{where}: {o['kind']} {o['metadata']['name']} has no namespace and would "
                    "land in whatever namespace kubectl points at")


# ------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_its_schema(
        renders: list[tuple[str, list[Obj]]], version: str) -> None:
    validator = kubernetes_validate()
    crds = load_crd_schemas()
    errors: list[str] = []
    for where, objects in renders:
        for o in objects:
            label = f"{where}: {o['kind']} {o['metadata']['name']}"
            crd = crds.get((o["apiVersion"], o["kind"]))
            if crd is not None:
                for error in jsonschema.Draft202012Validator(crd).iter_errors(o):
                    errors.append(f"{label}: {list(error.absolute_path)}: {error.message}")
                continue
            try:
                validator.validate(o, version, strict=True)
            except validator.ValidationError as error:
                errors.append(f"{label} (k8s {version}): {list(error.path)}: {error.message}")
            except validator.utils.SchemaNotFoundError:
                errors.append(f"{label}: no Kubernetes schema and no vendored CRD schema")
    assert not errors, "\n".join(errors)


def test_the_validators_reject_a_misspelt_field() -> None:
    """The schema test is only worth something if a typo fails it."""
    validator = kubernetes_validate()
    objects = overlay("production")
    deployment = copy.deepcopy(workload(objects, "ingest"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(validator.ValidationError):
        validator.validate(deployment, K8S_VERSIONS[0], strict=True)
    crds = load_crd_schemas()
    for kind, bad in [
        ("KafkaTopic", {"spec": {"partitions": 0}}),
        ("KafkaTopic", {"spec": {"retention": "1h"}}),
        ("ScaledObject", {"spec": {"triggers": [{"type": "kafka",
                                                  "metadata": {"lagThreshold": 400}}]}}),
        ("ServiceMonitor", {"spec": {"endpoints": [{"interval": "15 seconds"}]}}),
        ("KafkaNodePool", {"spec": {"roles": ["leader"]}}),
        ("Kafka", {"spec": {"kafka": {"listeners": [{"name": "PLAIN", "port": 9092,
                                                      "type": "internal", "tls": False}]}}}),
    ]:
        original = next(o for o in objects if o["kind"] == kind)
        broken = copy.deepcopy(original)
        for key, value in bad["spec"].items():
            broken["spec"][key] = value
        schema = crds[(original["apiVersion"], kind)]
        assert jsonschema.Draft202012Validator(schema).is_valid(original)
        assert not jsonschema.Draft202012Validator(schema).is_valid(broken), (kind, bad)


# ------------------------------------------------------------------- pods: security, shape


def test_pods_meet_the_restricted_pod_security_standard(
        renders: list[tuple[str, list[Obj]]]) -> None:
    uid = dockerfile_uid()
    for where, objects in renders:
        for w in workloads(objects):
            name = f"{where}: {w['metadata']['name']}"
            pod = w["spec"]["template"]["spec"]
            psc = pod["securityContext"]
            assert psc["runAsNonRoot"] is True, name
            assert psc["runAsUser"] == uid and psc["runAsGroup"] == uid, name
            assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
            assert pod["automountServiceAccountToken"] is False, name
            assert not pod.get("hostNetwork") and not pod.get("hostPID"), name
            # Service links would set CALLSCRIBE_INGEST_PORT / CALLSCRIBE_BRIDGE_PORT to
            # tcp://… from the Services callscribe-ingest / callscribe-bridge.
            assert pod["enableServiceLinks"] is False, name
            for c in pod["containers"] + pod.get("initContainers", []):
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                assert not sc["capabilities"].get("add"), name
                assert not sc.get("privileged"), name
            # Read-only root: /tmp (HOME, caches, faust's data dir in the image) is an emptyDir.
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in container(w)["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_pods_have_resources_probes_and_spread(renders: list[tuple[str, list[Obj]]]) -> None:
    for where, objects in renders:
        for w in workloads(objects):
            name = f"{where}: {w['metadata']['name']}"
            c = container(w)
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe in c, f"{name}: no {probe}"
            pod_labels = w["spec"]["template"]["metadata"]["labels"]
            spread = w["spec"]["template"]["spec"]["topologySpreadConstraints"]
            assert {s["topologyKey"] for s in spread} == {"topology.kubernetes.io/zone",
                                                          "kubernetes.io/hostname"}, name
            for s in spread:
                assert selects(s["labelSelector"]["matchLabels"], pod_labels), name
            assert selects(w["spec"]["selector"]["matchLabels"], pod_labels), name


def test_images_are_tagged_and_never_latest(renders: list[tuple[str, list[Obj]]]) -> None:
    for where, objects in renders:
        for w in workloads(objects):
            image = container(w)["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{where}: image {image} must carry a version tag"


def test_every_workload_has_a_disruption_budget_and_a_service(
        renders: list[tuple[str, list[Obj]]]) -> None:
    for where, objects in renders:
        for w in workloads(objects):
            labels = w["spec"]["template"]["metadata"]["labels"]
            budgets = [p for p in of_kind(objects, "PodDisruptionBudget")
                       if selects(p["spec"]["selector"]["matchLabels"], labels)]
            assert len(budgets) == 1, f"{where}: {w['metadata']['name']}"
            assert budgets[0]["spec"].get("maxUnavailable") == 1
            services = [s for s in of_kind(objects, "Service")
                        if selects(s["spec"]["selector"], labels)]
            assert len(services) == 1, f"{where}: {w['metadata']['name']}"
            ports = {p["name"]: p["containerPort"] for p in container(w)["ports"]}
            for port in services[0]["spec"]["ports"]:
                assert port["targetPort"] in ports, f"{where}: {port}"


# ------------------------------------------------------------------------------ draining


def _prestop_seconds(w: Obj) -> int:
    hook = container(w).get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


@pytest.mark.parametrize("name", OVERLAYS)
def test_grace_period_outlasts_the_drain(name: str) -> None:
    objects = overlay(name)
    ingest = workload(objects, "ingest")
    drain = float(_worker_config(objects, ingest)["CALLSCRIBE_INGEST_DRAIN_SECONDS"])
    grace = ingest["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # preStop, then CALLSCRIBE_INGEST_DRAIN_SECONDS of live calls, then closing the rest with 1001
    # (workers/ingest/server.py waits up to 10 s) and flushing the producer: the stop deadline
    # (workers/deadline.py) ends the process then at the latest.
    assert grace >= _prestop_seconds(ingest) + drain + deadline.INGEST_AFTER_DRAIN_S, (
        grace, drain)
    assert _prestop_seconds(ingest) >= 5, "endpoints need a moment to drop a terminating pod"
    bridge = workload(objects, "bridge")
    # aiohttp's shutdown_timeout in workers/cli.py is 10 s; 5 more to close the clients.
    assert bridge["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= (
        _prestop_seconds(bridge) + deadline.BRIDGE_S)
    transcribe = workload(objects, "transcribe")
    # Queued utterances decode for CALLSCRIBE_TRANSCRIBE_DRAIN_SECONDS, then the producer
    # flushes, offsets are committed and the member leaves the group.
    transcribe_drain = float(
        _worker_config(objects, transcribe)["CALLSCRIBE_TRANSCRIBE_DRAIN_SECONDS"])
    assert transcribe["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= (
        transcribe_drain + deadline.TRANSCRIBE_AFTER_DRAIN_S)
    assist = workload(objects, "assist")
    # No drain setting: the record in hand, then the producer flush (acks=all), the offset
    # commit and leaving the group, each bounded by faust's broker request timeout.
    from workers.faust_app import BROKER_REQUEST_TIMEOUT_S as request_timeout
    assert deadline.ASSIST_S >= request_timeout + 10
    assert assist["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= (
        deadline.ASSIST_S)
    for w in (ingest, bridge, assist):
        assert w["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, (
            "a rollout must add capacity before it drains a pod")


def _worker_config(objects: list[Obj], w: Obj) -> dict[str, str]:
    data: dict[str, str] = {}
    for source in container(w)["envFrom"]:
        data.update(config_map(objects, source["configMapRef"]["name"])["data"])
    return data


# -------------------------------------------------------------------------------- topics


@pytest.mark.parametrize("name", OVERLAYS)
def test_topics_match_the_code_and_the_settings(name: str) -> None:
    from workers.records import Topics

    objects = overlay(name)
    common = _worker_config(objects, workload(objects, "transcribe"))
    prefix = common["CALLSCRIBE_TOPIC_PREFIX"]
    partitions = int(common["CALLSCRIBE_TOPIC_PARTITIONS"])
    replication = int(common["CALLSCRIBE_TOPIC_REPLICATION"])
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t
              for t in of_kind(objects, "KafkaTopic")}
    code = Topics(prefix)
    assist_outputs = (code.transcripts_redacted, code.assist, code.summaries)
    assert set(topics) == {*code.all(), *assist_outputs, code.subscriptions}
    for topic in topics.values():
        spec = topic["spec"]
        assert spec["replicas"] == replication, topic["metadata"]["name"]
        isr = int(spec["config"]["min.insync.replicas"])
        assert 1 <= isr <= spec["replicas"] and (spec["replicas"] < 3 or isr >= 2)
        assert int(spec["config"]["segment.ms"]) <= int(spec["config"]["retention.ms"])
    # The transcriber consumes audio and calls co-partitioned, the assist worker transcripts
    # and calls: same count, and the count the workers would create them with. The assist
    # worker's outputs keep a call on one partition number too.
    for t in (code.audio, code.calls, code.transcripts, *assist_outputs):
        assert topics[t]["spec"]["partitions"] == partitions, t
    # Keyed by call id with many records per call: compaction would keep one record per call.
    # Summaries (one per call): a replay after a restart may send a second, partial summary
    # with the same key, which compaction would keep instead of the complete first one.
    for t in topics:
        assert "compact" not in topics[t]["spec"]["config"]["cleanup.policy"], t
    retention = {t: int(topics[t]["spec"]["config"]["retention.ms"]) for t in topics}
    assert retention[code.audio] <= 6 * 3600_000
    assert retention[code.audio] < retention[code.transcripts]
    # A bridge serving the redacted stream replays the window it would replay from the raw one.
    assert retention[code.transcripts_redacted] == retention[code.transcripts]
    assert retention[code.summaries] > retention[code.transcripts_redacted]
    # Strimzi reconciles topics of the cluster the label names, in that cluster's namespace.
    for kafka in of_kind(objects, "Kafka"):
        for topic in topics.values():
            assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
            assert topic["metadata"]["namespace"] == kafka["metadata"]["namespace"]
        # The workers use the internal listener that speaks their security protocol.
        tls = common["CALLSCRIBE_KAFKA_SECURITY_PROTOCOL"] in ("SSL", "SASL_SSL")
        listener = next(listener for listener in kafka["spec"]["kafka"]["listeners"]
                        if listener["tls"] == tls and listener["type"] == "internal")
        if common["CALLSCRIBE_KAFKA_SECURITY_PROTOCOL"].startswith("SASL"):
            assert listener["authentication"]["type"] == \
                common["CALLSCRIBE_KAFKA_SASL_MECHANISM"].lower()
        else:
            assert "authentication" not in listener
        assert common["CALLSCRIBE_KAFKA_BOOTSTRAP"] == (
            f"{kafka['metadata']['name']}-kafka-bootstrap.{kafka['metadata']['namespace']}"
            f".svc:{listener['port']}")
        assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    pools = of_kind(objects, "KafkaNodePool")
    assert sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"]) >= (
        replication)


def test_the_bridge_serves_what_the_assist_worker_writes(
        renders: list[tuple[str, list[Obj]]]) -> None:
    """Agent UIs see redacted text: the bridge reads <prefix>.transcripts.redacted, and the
    worker that writes it is deployed beside it, on the same topics."""
    for where, objects in renders:
        bridge = _worker_config(objects, workload(objects, "bridge"))
        assert bridge[env_name(BridgeSettings, "bridge_source")] == "redacted", (
            f"{where}: the bridge would serve unredacted transcripts")
        assist = _worker_config(objects, workload(objects, "assist"))
        for var in ("CALLSCRIBE_TOPIC_PREFIX", "CALLSCRIBE_KAFKA_BOOTSTRAP"):
            assert assist[var] == bridge[var], (where, var)


# --------------------------------------------------------------------------- components


#: Consumer-group workers KEDA scales: component → (settings class, the topic whose lag it reads).
KEDA_SCALED = {
    "transcribe": (TranscribeSettings, "audio"),
    "assist": (AssistSettings, "transcripts"),
}


def test_autoscaling_follows_the_consumer_groups_and_partitions() -> None:
    for objects in (overlay("production"), base_with_component("autoscaling")):
        for component, (settings, topic) in KEDA_SCALED.items():
            w = workload(objects, component)
            config = _worker_config(objects, w)
            scaled = one(objects, "ScaledObject", f"callscribe-{component}")
            target = scaled["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) == ("Deployment", w["metadata"]["name"])
            kafka = next(t for t in scaled["spec"]["triggers"]
                         if t["type"] == "kafka")["metadata"]
            assert kafka["consumerGroup"] == config[env_name(settings, "group_id")], component
            assert kafka["topic"] == f"{config['CALLSCRIBE_TOPIC_PREFIX']}.{topic}"
            assert kafka["bootstrapServers"] == config["CALLSCRIBE_KAFKA_BOOTSTRAP"]
            if config["CALLSCRIBE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL":  # kafka-auth
                assert (kafka["sasl"], kafka["tls"]) == ("scram_sha512", "enable")
                trigger = next(t for t in scaled["spec"]["triggers"] if t["type"] == "kafka")
                one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
            assert kafka["allowIdleConsumers"] == "false"
            assert scaled["spec"]["maxReplicaCount"] <= int(
                config["CALLSCRIBE_TOPIC_PARTITIONS"]), component
            assert scaled["spec"]["minReplicaCount"] >= 1
        for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            one(objects, ref["kind"], ref["name"])
        scaled_names = {h["spec"]["scaleTargetRef"]["name"]
                        for h in of_kind(objects, "HorizontalPodAutoscaler")}
        assert scaled_names == {"callscribe-ingest", "callscribe-bridge"}
        for w in workloads(objects):
            assert "replicas" not in w["spec"], (
                f"{w['metadata']['name']}: replicas would fight the autoscaler on every apply")


def test_gpu_component_puts_whisper_on_a_gpu() -> None:
    for objects in (overlay("production"), base_with_component("gpu")):
        transcribe = workload(objects, "transcribe")
        c = container(transcribe)
        config = _worker_config(objects, transcribe)
        assert config["CALLSCRIBE_DEVICE"] == "cuda"
        assert config["CALLSCRIBE_COMPUTE_TYPE"] == "float16"
        assert config["CALLSCRIBE_WHISPER_MODEL"].startswith("/opt/callscribe/models/")
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert "cuda" in c["image"]
        pod = transcribe["spec"]["template"]["spec"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert pod["nodeSelector"]
        assert transcribe["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
        for other in set(WORKER_COMPONENTS) - {"transcribe"}:
            assert "cuda" not in container(workload(objects, other))["image"]


def test_cpu_transcriber_threads_match_its_cpu_request(
        renders: list[tuple[str, list[Obj]]]) -> None:
    on_cpu = 0
    for where, objects in renders:
        transcribe = workload(objects, "transcribe")
        config = _worker_config(objects, transcribe)
        if config["CALLSCRIBE_DEVICE"] != "cpu":
            continue
        on_cpu += 1
        request = str(container(transcribe)["resources"]["requests"]["cpu"])
        cores = int(request[:-1]) / 1000 if request.endswith("m") else float(request)
        assert int(config["CALLSCRIBE_CPU_THREADS"]) == max(1, int(cores)), (
            f"{where}: CPU threads 0 = every core of the node; match the request instead")
    assert on_cpu >= 2, "the local overlay and the CPU components run whisper on CPU"


def test_network_policies_allow_exactly_the_data_flow() -> None:
    for objects in (overlay("production"), base_with_component("network-policy")):
        policies = of_kind(objects, "NetworkPolicy")
        deny = [p for p in policies if p["spec"]["podSelector"] == {}]
        assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
        for component in WORKER_COMPONENTS:
            w = workload(objects, component)
            labels = w["spec"]["template"]["metadata"]["labels"]
            mine = [p for p in policies if selects(
                p["spec"]["podSelector"].get("matchLabels", {}), labels) and p not in deny]
            open_ports = {port["port"] for p in mine for rule in p["spec"].get("ingress", [])
                          for port in rule.get("ports", [])}
            assert open_ports == {c["containerPort"] for c in container(w)["ports"]}, component
            egress_ports = {port["port"] for p in mine for rule in p["spec"].get("egress", [])
                            for port in rule.get("ports", [])}
            assert {53, 9092} <= egress_ports, component


def test_monitoring_scrapes_every_worker_and_ships_the_dashboard() -> None:
    for objects in (overlay("production"), base_with_component("monitoring")):
        monitor = one(objects, "ServiceMonitor", "callscribe")
        selector = monitor["spec"]["selector"]["matchLabels"]
        scraped = [s for s in of_kind(objects, "Service")
                   if selects(selector, s["metadata"]["labels"])]
        assert {s["metadata"]["name"] for s in scraped} == {
            f"callscribe-{c}" for c in WORKER_COMPONENTS}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["path"] == "/metrics"
            for service in scraped:
                assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        dashboard = one(objects, "ConfigMap", "callscribe-grafana-dashboard")
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        (content,) = dashboard["data"].values()
        assert json.loads(content)["title"]


# ---------------------------------------------------------------------------- kafka-auth

#: What each worker reads and writes, from the code (docs/security.md, "ACLs"): worker →
#: (topics read, topics written, consumer group setting or None for assigned partitions).
def _kafka_needs() -> dict[str, tuple[set[str], set[str], str | None]]:
    from workers.records import Topics
    from workers.settings import AssistSettings, IngestSettings, TranscribeSettings

    t = Topics()
    return {
        "ingest": ({t.control, t.subscriptions}, {t.audio, t.calls, t.subscriptions},
                   IngestSettings.model_fields["ingest_group_id"].default),
        "transcribe": ({t.audio, t.calls, t.interest}, {t.transcripts},
                       TranscribeSettings.model_fields["group_id"].default),
        "assist": ({t.transcripts, t.calls}, {t.transcripts_redacted, t.assist, t.summaries},
                   AssistSettings.model_fields["group_id"].default),
        # audio: supervisor live listen.
        "bridge": ({t.transcripts_redacted, t.calls, t.audio}, {t.control, t.interest}, None),
    }


def _grants(user: Obj) -> dict[tuple[str, str, str], set[str]]:
    grants: dict[tuple[str, str, str], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        r = acl["resource"]
        assert acl.get("type", "allow") == "allow"
        grants.setdefault((r["type"], r["name"], r.get("patternType", "literal")),
                          set()).update(acl["operations"])
    return grants


def test_kafka_users_grant_exactly_what_each_worker_needs() -> None:
    for objects in (overlay("production"), base_with_component("kafka-auth")):
        users = {u["metadata"]["name"]: u for u in of_kind(objects, "KafkaUser")}
        assert set(users) == {f"callscribe-{w}" for w in _kafka_needs()} | {
            "callscribe-reader", "callscribe-keda"}
        keda = _grants(users["callscribe-keda"])
        assert all(ops == {"Describe"} for ops in keda.values())  # lag only, never records
        for worker, (reads, writes, group) in _kafka_needs().items():
            user = users[f"callscribe-{worker}"]
            assert user["spec"]["authentication"]["type"] == "scram-sha-512"
            assert user["metadata"]["labels"]["strimzi.io/cluster"] == "callscribe"
            grants = _grants(user)
            data = {name: ops & {"Read", "Write"} for (kind, name, pattern), ops
                    in grants.items() if kind == "topic" and pattern == "literal"}
            assert {n for n, ops in data.items() if "Read" in ops} == reads, worker
            assert {n for n, ops in data.items() if "Write" in ops} == writes, worker
            groups = {name for kind, name, _ in grants if kind == "group"}
            assert groups == ({group} if group else set()), worker
            for (kind, name, pattern), ops in grants.items():
                assert "All" not in ops and kind != "cluster", (worker, name)
                if pattern == "prefix":  # metadata only: never data
                    assert ops <= {"Describe", "DescribeConfigs"}, (worker, name)
        # Only the assist worker reads the raw transcripts.
        raw_readers = {u for u, user in users.items()
                       if "Read" in _grants(user).get(("topic", "callscribe.transcripts",
                                                       "literal"), set())}
        assert raw_readers == {"callscribe-assist"}
        reader = _grants(users["callscribe-reader"])
        assert {name for kind, name, _ in reader if kind == "topic"} == {
            "callscribe.transcripts.redacted", "callscribe.assist", "callscribe.summaries"}
        assert all(ops <= {"Read", "Describe"} for ops in reader.values())


def test_kafka_auth_wires_every_worker_to_its_own_user_over_tls() -> None:
    for objects in (overlay("production"), base_with_component("kafka-auth")):
        common = config_map(objects, next(
            c["metadata"]["name"] for c in of_kind(objects, "ConfigMap")
            if c["metadata"]["name"].startswith("callscribe-common")))["data"]
        assert common["CALLSCRIBE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert common["CALLSCRIBE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert common["CALLSCRIBE_KAFKA_BOOTSTRAP"].endswith(":9093")
        mount = "/etc/callscribe/kafka"
        for worker in _kafka_needs():
            w = workload(objects, worker)
            annotations = w["spec"]["template"]["metadata"]["annotations"]
            assert annotations["callscribe.io/kafka-user"] == f"callscribe-{worker}"
            volume = next(v for v in w["spec"]["template"]["spec"]["volumes"]
                          if v["name"] == "kafka-credentials")
            sources = volume["projected"]["sources"]
            secrets = {s["secret"]["name"]: s["secret"]["items"] for s in sources
                       if "secret" in s}
            assert secrets[f"callscribe-{worker}"] == [{"key": "password", "path": "password"}]
            assert secrets["callscribe-kafka-ca"] == [{"key": "ca.crt", "path": "ca.crt"}]
            fields = [i["fieldRef"]["fieldPath"] for s in sources if "downwardAPI" in s
                      for i in s["downwardAPI"]["items"]]
            assert fields == ["metadata.annotations['callscribe.io/kafka-user']"]
            mounts = {m["mountPath"]: m for m in container(w)["volumeMounts"]}
            assert mounts[mount]["name"] == "kafka-credentials" and mounts[mount]["readOnly"]
        for key, file in (("CALLSCRIBE_KAFKA_SASL_USERNAME_FILE", "username"),
                          ("CALLSCRIBE_KAFKA_SASL_PASSWORD_FILE", "password"),
                          ("CALLSCRIBE_KAFKA_SSL_CA_FILE", "ca.crt")):
            assert common[key] == f"{mount}/{file}"
    kafka = one(overlay("production"), "Kafka", "callscribe")["spec"]
    assert [(li["port"], li["tls"], li["authentication"]["type"])
            for li in kafka["kafka"]["listeners"]] == [(9093, True, "scram-sha-512")]
    assert kafka["kafka"]["authorization"] == {"type": "simple"}
    assert kafka["entityOperator"]["userOperator"]["watchedNamespace"] == "callscribe"


def test_vocabulary_component_mounts_a_terms_file_the_transcriber_can_load(
        tmp_path: Path) -> None:
    """The ConfigMap's file is mounted where CALLSCRIBE_VOCABULARY points, in the transcriber
    only, and its content is a list the worker loads (terms, comments skipped)."""
    for objects in (overlay("production"), base_with_component("vocabulary")):
        work = workload(objects, "transcribe")
        path = container_env(objects, work)["CALLSCRIBE_VOCABULARY"][1]
        mounts = {m["name"]: m for m in container(work)["volumeMounts"]}
        volumes = {v["name"]: v for v in work["spec"]["template"]["spec"]["volumes"]}
        mount = mounts["vocabulary"]
        assert mount["readOnly"] and path.startswith(mount["mountPath"] + "/")
        terms = [o for o in of_kind(objects, "ConfigMap")
                 if o["metadata"]["name"] == volumes["vocabulary"]["configMap"]["name"]]
        [config] = terms
        file = tmp_path / "terms.txt"
        file.write_text(config["data"][path.rsplit("/", 1)[1]], encoding="utf-8")
        assert load_vocabulary(file) == ("callscribe", "FiberMax", "Unlimited Plus", "autopay")
        for other in ("ingest", "bridge", "assist"):
            assert "CALLSCRIBE_VOCABULARY" not in container_env(objects, workload(objects, other))
