"""The Redis topology settings: one clear line for each mistake, the Topology the
rest of the service connects with, and no password in anything printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError
from core.state.settings import load_state_settings
from core.state.topology import Topology

TOPOLOGY_VARS = [
    "REDIS_URL",
    "REDIS_CLUSTER",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_SERVICE",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_WAIT_REPLICAS",
    "REDIS_WAIT_TIMEOUT",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in TOPOLOGY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_one_server_by_default_and_no_wait_for_replicas() -> None:
    settings = load_state_settings(redis_url="redis://cache:6379/2")
    assert settings.topology == Topology(url="redis://cache:6379/2")
    assert settings.topology.kind == "single"
    assert settings.wait_replicas == 0


def test_a_cluster_is_named_by_one_node_and_waits_for_one_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    monkeypatch.setenv("REDIS_URL", "rediss://:pw@config.example:6379")
    settings = load_state_settings()
    assert settings.topology.kind == "cluster"
    assert settings.topology.url == "rediss://:pw@config.example:6379"
    assert settings.wait_replicas == 1
    assert load_state_settings(redis_wait_replicas=0).wait_replicas == 0


def test_sentinels_are_read_from_a_list_of_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", " s1:26379, [::1]:26380 ,s3:26381")
    monkeypatch.setenv("REDIS_SENTINEL_SERVICE", "cache")
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    settings = load_state_settings()
    topology = settings.topology
    assert topology.kind == "sentinel"
    assert topology.sentinels == (("s1", 26379), ("::1", 26380), ("s3", 26381))
    assert topology.service == "cache"
    assert topology.sentinel_password == "sentinel-secret"
    assert settings.wait_replicas == 1
    assert "sentinel-secret" not in repr(settings)
    assert "sentinel-secret" not in topology.describe()


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"redis_cluster": True}, "REDIS_CLUSTER needs REDIS_URL"),
        ({"redis_cluster": True, "redis_url": "unix:///tmp/r.sock"}, "redis:// or rediss://"),
        ({"redis_cluster": True, "redis_url": "redis://node:7000/3"}, "only database 0"),
        (
            {"redis_cluster": True, "redis_url": "redis://n:7000", "redis_sentinels": "s:26379"},
            "exclude each other",
        ),
        ({"redis_sentinels": "s1:26379,nohost"}, "'nohost' is not HOST:PORT"),
        ({"redis_sentinels": "s1:99999"}, "is not HOST:PORT"),
        ({"redis_wait_timeout": 5}, "REDIS_WAIT_TIMEOUT"),
        ({"redis_wait_replicas": -1}, "REDIS_WAIT_REPLICAS"),
    ],
)
def test_a_topology_mistake_is_one_clear_line(overrides: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_state_settings(**overrides)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_cluster_on_database_zero_is_accepted() -> None:
    for url in ("redis://node:7000", "redis://node:7000/", "redis://node:7000/0"):
        assert load_state_settings(redis_cluster=True, redis_url=url).topology.cluster


def test_no_topology_prints_a_password() -> None:
    topology = Topology(
        url="redis://:url-secret@node:7000/0",
        sentinels=(("s", 26379),),
        sentinel_password="sentinel-secret",
    )
    for shown in (repr(topology), str(topology), topology.describe()):
        assert "url-secret" not in shown and "sentinel-secret" not in shown
