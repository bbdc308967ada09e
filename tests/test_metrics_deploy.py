"""The Grafana dashboard (deploy/grafana/*.json), the Prometheus alert rules
(deploy/prometheus/*.yml) and docs/metrics.md against the metrics chatrelay
actually exports.

Neither Grafana nor Prometheus runs here, so what is checked is what goes stale
silently when a metric is renamed: every series a query names exists in the
registry's exposition (histograms by their ``_bucket``/``_count``/``_sum``,
counters by ``_total``), every chatrelay metric has a panel and a line in the
docs, and the rules file has the shape Prometheus loads (``groups[].name``,
``rules[].alert/expr/for/labels/annotations``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.telemetry.metrics import ChatrelayMetrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
RULE_FILES = sorted((ROOT / "deploy" / "prometheus").glob("*.yml"))
DOCS = ROOT / "docs" / "metrics.md"

PREFIXES = ("chatrelay_", "process_", "python_")
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_IDENTIFIER = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b")
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


@cache
def families() -> dict[str, str]:
    """Every metric family of a fresh registry: name -> type."""
    return {f.name: f.type for f in ChatrelayMetrics().registry.collect()}


@cache
def series_names() -> frozenset[str]:
    """Every sample name the exposition can carry."""
    return frozenset(
        name + suffix for name, kind in families().items() for suffix in SUFFIXES[kind]
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values``) reads."""
    bare = _STRING.sub('""', expr)
    bare = _GROUPING.sub("", bare)
    bare = _MATCHERS.sub("", bare)
    return {name for name in _IDENTIFIER.findall(bare) if name.startswith(PREFIXES)}


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'sum by (platform, python_version) (rate(chatrelay_replies_total{outcome="chatrelay_x"}'
        "[5m])) / on (instance) group_left(version) chatrelay_build_info"
    )
    assert metric_names(expr) == {"chatrelay_replies_total", "chatrelay_build_info"}


def walk(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)
    else:
        yield key, node


def dashboard_queries(path: Path) -> list[str]:
    """The panels' ``expr`` and the template variables' queries."""
    document = json.loads(path.read_text())
    return [value for key, value in walk(document) if key in ("expr", "definition")]


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def test_there_are_a_dashboard_and_rules() -> None:
    assert DASHBOARDS and RULE_FILES


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_series_a_dashboard_reads_exists(path: Path) -> None:
    queries = dashboard_queries(path)
    assert queries
    for query in queries:
        unknown = metric_names(query) - series_names()
        assert not unknown, f"{path.name}: {query!r} reads no such series: {sorted(unknown)}"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_series_an_alert_reads_exists(path: Path) -> None:
    for rule in rules(path):
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} reads no chatrelay metric"
        unknown = names - series_names()
        assert not unknown, f"{rule['alert']} reads no such series: {sorted(unknown)}"


def test_every_chatrelay_metric_has_a_panel() -> None:
    read = {
        name
        for path in DASHBOARDS
        for query in dashboard_queries(path)
        for name in metric_names(query)
    }
    for name, kind in families().items():
        if name.startswith("chatrelay_"):
            assert read & {name + s for s in SUFFIXES[kind]}, f"no panel shows {name}"


def test_every_metric_and_label_is_documented() -> None:
    docs = DOCS.read_text()
    for family in ChatrelayMetrics().registry.collect():
        if not family.name.startswith("chatrelay_"):
            continue
        shown = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
        assert f"`{shown}`" in docs, f"docs/metrics.md does not list {shown}"
    metrics = ChatrelayMetrics()
    for attribute in vars(metrics).values():
        for label in getattr(attribute, "label_names", ()):
            assert f"`{label}`" in docs, f"docs/metrics.md does not explain the label {label}"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_the_rules_file_has_prometheus_shape(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names)) and all(names)
    alerts: list[str] = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            alerts.append(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert rule["expr"].count("(") == rule["expr"].count(")")
            assert _DURATION.match(str(rule["for"])), rule["for"]
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert all(isinstance(v, str) for v in rule["labels"].values())
            assert {"summary", "description"} <= set(rule["annotations"])
            assert all(isinstance(v, str) for v in rule["annotations"].values())
    assert len(alerts) == len(set(alerts))


def test_the_alerts_the_issue_asks_for_are_there() -> None:
    read = {
        name for path in RULE_FILES for rule in rules(path) for name in metric_names(rule["expr"])
    }
    assert "chatrelay_rate_limited_total" in read  # 429s
    assert "chatrelay_inflight_events_total" in read  # undeliverable finals
    assert "chatrelay_redis_degraded" in read
    assert "chatrelay_time_to_first_visible_seconds_bucket" in read  # p99 first visible


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_the_dashboard_is_well_formed(path: Path) -> None:
    document = json.loads(path.read_text())
    assert document["uid"] and document["title"] and document["schemaVersion"] >= 36
    variables = {v["name"] for v in document["templating"]["list"]}
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in document["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{panel['title']}: unknown variables {used - variables}"
