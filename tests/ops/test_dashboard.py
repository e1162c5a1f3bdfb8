"""The Grafana dashboard in deploy/grafana: valid, laid out, and querying only metrics (and labels)
that workers/metrics.py defines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.ops.promql import TARGET_LABELS, parse, sample_labels

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "callscribe-dashboard.json"
#: What the operations issue asks the dashboard to show, as metric names that must be queried.
REQUIRED = {
    "live calls": "callscribe_ingest_active_calls",
    "audio rate": "callscribe_ingest_audio_seconds_total",
    "transcript latency": "callscribe_transcribe_eou_to_produced_seconds_bucket",
    "delivery latency": "callscribe_bridge_eou_to_delivered_seconds_bucket",
    "consumer lag": "callscribe_kafka_consumer_lag_records",
    "rejections": "callscribe_ingest_rejected_total",
    "drops": "callscribe_records_skipped_total",
    "suppressions": "callscribe_transcribe_suppressed_total",
    "liveCalls connections": "callscribe_bridge_connections",
    "slow-client closes": "callscribe_bridge_slow_client_closes_total",
    "auth failures": "callscribe_bridge_auth_failures_total",
    "assist messages": "callscribe_assist_messages_total",
}


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def queries() -> list[tuple[str, str, str]]:
    """(panel title, expression, legend format) of every query in the dashboard."""
    found = []
    for panel in load()["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"], target.get("legendFormat", "")))
    return found


def test_the_dashboard_is_valid_grafana_json() -> None:
    data = load()
    assert data["uid"] == "callscribe" and data["title"]
    assert isinstance(data["schemaVersion"], int) and data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"stat", "timeseries", "gauge", "table", "bargauge"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_queried_metric_and_label_exists() -> None:
    known = sample_labels()
    for title, expr, legend in queries():
        usage = parse(expr)
        assert usage.metrics, f"{title}: no metric in {expr!r}"
        unknown = usage.metrics - known.keys()
        assert not unknown, f"{title}: {sorted(unknown)} not defined in workers/metrics.py"
        available = set(TARGET_LABELS).union(*(known[m] for m in usage.metrics))
        assert usage.labels <= available, f"{title}: labels {usage.labels - available}"
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert legend_labels <= available, f"{title}: legend uses {legend_labels - available}"
        if "histogram_quantile" in expr:
            assert all(m.endswith("_bucket") for m in usage.metrics), title
            assert re.search(r"by \((?:[^)]*,\s*)?le\b", expr), f"{title}: aggregate by le"


def test_the_dashboard_covers_what_operations_asked_for() -> None:
    used = set().union(*(parse(expr).metrics for _, expr, _ in queries()))
    missing = {what: name for what, name in REQUIRED.items() if name not in used}
    assert not missing, missing


@pytest.mark.parametrize(("expr", "metrics", "labels"), [
    ('histogram_quantile(0.95, sum by (le, topic) (rate(foo_seconds_bucket{topic=~"a.*"}'
     '[$__rate_interval])))', {"foo_seconds_bucket"}, {"le", "topic"}),
    ("sum(rate(a_total[5m])) / sum(rate(b_count[5m])) * 60", {"a_total", "b_count"}, set()),
    ('topk(10, max by (consumer) (lag{partition!="0", job="x"}) offset 5m)', {"lag"},
     {"consumer", "partition", "job"}),
    ("up == bool 1 and on (instance) absent(x_total)", {"up", "x_total"}, {"instance"}),
])
def test_the_promql_reader(expr: str, metrics: set[str], labels: set[str]) -> None:
    usage = parse(expr)
    assert usage.metrics == metrics
    assert usage.labels == labels


def test_an_unknown_metric_is_caught() -> None:
    known = sample_labels()
    usage = parse("sum(rate(callscribe_ingest_calls_total[5m])) + callscribe_nope_total")
    assert usage.metrics - known.keys() == {"callscribe_nope_total"}
