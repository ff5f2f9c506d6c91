"""bot.appspec: what an install asks Docker for, from the test catalog's apps."""

from __future__ import annotations

from pathlib import Path

from bot.appspec import app_specs, container_name, health_timeout, network_name, resources, volume_name
from bot.catalog import Limits, read_app, render, resolve_values

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "catalog"


def pair_specs(overrides: Limits = Limits()):
    app = read_app(FIXTURES / "pair.yaml")
    return app_specs(render(app, resolve_values(app, {"greeting": "hi"})), overrides)


def test_names_are_predictable() -> None:
    assert (network_name("wiki"), volume_name("wiki", "db"), container_name("wiki", "web")) == (
        "hp-wiki", "hp-wiki-db", "wiki-web")


def test_dependencies_start_first_and_carry_their_order() -> None:
    web, client = pair_specs()
    assert [(s.name, s.service, s.order) for s in (web, client)] == [("pair-web", "web", 0), ("pair-client", "client", 1)]
    assert web.body["Labels"] == {"org.example.greeting": "hi", "homeport.app": "pair", "homeport.managed": "catalog",
                                  "homeport.service": "web", "homeport.order": "0"}


def test_network_alias_ports_volumes_and_hardening() -> None:
    web, client = pair_specs()
    host = web.body["HostConfig"]
    assert host["NetworkMode"] == "hp-pair"
    assert web.body["NetworkingConfig"] == {"EndpointsConfig": {"hp-pair": {"Aliases": ["web"]}}}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert web.body["ExposedPorts"] == {"8080/tcp": {}}
    assert host["Mounts"] == [{"Type": "volume", "Source": "hp-pair-www", "Target": "/www", "ReadOnly": False}]
    assert host["SecurityOpt"] == ["no-new-privileges:true"] and host["CapDrop"] == ["ALL"]
    assert host["RestartPolicy"] == {"Name": "unless-stopped"}
    assert "CapAdd" not in host and "Tmpfs" not in host
    assert web.body["Healthcheck"] == {"Test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"],
                                       "Interval": 1_000_000_000, "Timeout": 2_000_000_000, "Retries": 3,
                                       "StartPeriod": 0}
    assert client.body["StopTimeout"] == 5 and "StopTimeout" not in web.body
    assert any(e.startswith("TOKEN=") and len(e) > 30 for e in web.body["Env"])


def test_limits_come_from_the_catalog_and_the_owner_overrides_win() -> None:
    web, client = pair_specs()
    assert {k: web.body["HostConfig"][k] for k in ("Memory", "MemorySwap", "NanoCpus", "PidsLimit")} == {
        "Memory": 32 * 1024**2, "MemorySwap": 32 * 1024**2, "NanoCpus": 500_000_000, "PidsLimit": 64}
    assert client.body["HostConfig"]["NanoCpus"] == 0  # no cpus limit for the client
    web, client = pair_specs(Limits(memory=64 * 1024**2, cpus=1.5))
    assert (web.body["HostConfig"]["Memory"], web.body["HostConfig"]["NanoCpus"]) == (64 * 1024**2, 1_500_000_000)
    assert client.body["HostConfig"]["PidsLimit"] == 64  # not overridden: the catalog's


def test_resources_without_swap_and_unlimited_pids() -> None:
    assert resources(Limits(memory=100, cpus=0.25)) == {"Memory": 100, "MemorySwap": 100,
                                                        "NanoCpus": 250_000_000, "PidsLimit": -1}


def test_health_timeout_covers_start_period_and_retries() -> None:
    app = read_app(FIXTURES / "pair.yaml")
    assert health_timeout(app.service("web"), 10) == 10 + 0 + (1 + 2) * 4
