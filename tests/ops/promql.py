"""Just enough PromQL to check a dashboard against the metrics the workers define: the metric
names and label names an expression uses (no evaluation, no full grammar)."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from dataclasses import dataclass, field
from types import ModuleType

from prometheus_client.metrics import MetricWrapperBase

import workers
from workers import metrics

#: Labels Prometheus adds when it scrapes (and ``worker``, from the ServiceMonitor relabeling).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container",
                           "endpoint", "worker"})
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "offset", "and", "or", "unless", "inf", "nan"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?(?:\d+(?:ms|[smhdwy]))+")
_MATCHERS = re.compile(r"\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:e[+-]?\d+)?")


@dataclass
class Usage:
    """What one expression refers to."""

    metrics: set[str] = field(default_factory=set)  # sample names, e.g. foo_bucket
    labels: set[str] = field(default_factory=set)   # in matchers and grouping clauses


def parse(expr: str) -> Usage:
    usage = Usage()
    text = _VARIABLE.sub(" 1 ", expr)
    # Label names in matchers ({a="x", b=~"y"}) before the strings inside them go.
    for body in _MATCHERS.findall(_STRING.sub('""', text)):
        for matcher in filter(None, (m.strip() for m in body.split(","))):
            usage.labels.add(re.split(r"\s*(?:=~|!~|!=|=)\s*", matcher, maxsplit=1)[0])
    text = _MATCHERS.sub(" ", _STRING.sub(" ", text))
    text = _OFFSET.sub(" ", _RANGE.sub(" ", text))
    for labels in _GROUPING.findall(text):
        usage.labels.update(label.strip() for label in labels.split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    for match in _IDENT.finditer(text):
        name = match.group()
        is_call = text[match.end():].lstrip().startswith("(")
        if not is_call and name.lower() not in _KEYWORDS:
            usage.metrics.add(name)
    return usage


@dataclass(frozen=True)
class Defined:
    """A metric as workers/metrics.py defines it."""

    name: str           # the family name, e.g. callscribe_ingest_calls (counters without _total)
    type: str           # counter, gauge, histogram, summary
    labels: tuple[str, ...]
    documentation: str

    @property
    def exposed(self) -> str:
        """The name as documented and queried (counters with ``_total``)."""
        return f"{self.name}_total" if self.type == "counter" else self.name

    @property
    def samples(self) -> dict[str, tuple[str, ...]]:
        """Every sample name PromQL may use, with the labels it carries."""
        if self.type == "counter":
            return {f"{self.name}_total": self.labels, f"{self.name}_created": self.labels}
        if self.type == "histogram":
            return {f"{self.name}_bucket": (*self.labels, "le"),
                    f"{self.name}_sum": self.labels, f"{self.name}_count": self.labels,
                    f"{self.name}_created": self.labels}
        if self.type == "summary":
            return {self.name: (*self.labels, "quantile"), f"{self.name}_sum": self.labels,
                    f"{self.name}_count": self.labels}
        return {self.name: self.labels}


def metric_modules() -> list[ModuleType]:
    """:mod:`workers.metrics` and every worker's own ``workers.<worker>.metrics``."""
    modules = [metrics]
    for package in sorted(m.name for m in pkgutil.iter_modules(workers.__path__) if m.ispkg):
        name = f"workers.{package}.metrics"
        if importlib.util.find_spec(name) is not None:
            modules.append(importlib.import_module(name))
    return modules


def defined_metrics() -> dict[str, Defined]:
    """Every metric object the workers define, by exposed name."""
    found: dict[str, Defined] = {}
    for module in metric_modules():
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                item = Defined(value._name, str(value._type), tuple(value._labelnames),
                               value._documentation)
                found[item.exposed] = item
    return found


def sample_labels() -> dict[str, tuple[str, ...]]:
    """Every queryable sample name of :mod:`workers.metrics`, with its labels."""
    out: dict[str, tuple[str, ...]] = {}
    for item in defined_metrics().values():
        out.update(item.samples)
    return out
