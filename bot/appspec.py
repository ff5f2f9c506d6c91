"""From a catalog app to the Docker objects that run it: names, labels and
the Engine API bodies of its network, volumes and containers.

Pure functions over the catalog's dataclasses, without docker-py: the engine
sends these bodies as they are (`POST /containers/create`), so what homeport
asks Docker for can be read (and unit-tested) in one place. Names are
predictable so that an app's objects can be found by name as well as by
label: network `hp-<app>`, volume `hp-<app>-<volume>`, container
`<app>-<service>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bot.catalog import App, Limits, Service
from bot.catalog.policy import NO_NEW_PRIVILEGES
# MANAGED_LABEL marks what an install made, as opposed to containers an owner
# merely labelled homeport.app (issue 2's apps): only those count as drift
# when no install record explains them.
from bot.engine import APP_LABEL, MANAGED_LABEL, MANAGED_VALUE, ORDER_LABEL, SERVICE_LABEL

log = logging.getLogger(__name__)

RESTART_POLICY = "unless-stopped"
NANO = 1_000_000_000


def network_name(app: str) -> str:
    return f"hp-{app}"


def volume_name(app: str, volume: str) -> str:
    return f"hp-{app}-{volume}"


def container_name(app: str, service: str) -> str:
    return f"{app}-{service}"


def object_labels(app: str) -> dict[str, str]:
    """Labels of everything an install creates."""
    return {APP_LABEL: app, MANAGED_LABEL: MANAGED_VALUE}


@dataclass(frozen=True)
class ContainerSpec:
    """One container to create: its name, service, start position and the
    Engine API body of `POST /containers/create`."""

    name: str
    app: str
    service: str
    order: int
    image: str
    body: dict[str, Any]
    stop_timeout: float | None


def effective_limits(service: Service, overrides: Limits) -> Limits:
    """The owner's `limit` values over the catalog's."""
    return overrides.merged_over(service.limits)


def resources(limits: Limits) -> dict[str, int]:
    """HostConfig resource fields, also the body of `POST /containers/{id}/update`.

    Swap is set equal to memory: the container gets no swap beyond its limit
    (a limit the kernel could dodge by swapping protects nothing). CPUs go
    as NanoCpus, which Docker refuses to mix with CpuQuota on a later update.
    Zero means unlimited to Docker, so an unset limit is sent as 0 too.
    """
    out: dict[str, int] = {
        "Memory": limits.memory or 0,
        "MemorySwap": limits.memory or 0,
        "NanoCpus": int(round((limits.cpus or 0) * NANO)),
    }
    # PidsLimit 0 means "unlimited" on API >= 1.41 and "keep" before; -1 is
    # unlimited everywhere.
    out["PidsLimit"] = limits.pids if limits.pids else -1
    return out


def _healthcheck(service: Service) -> dict[str, Any] | None:
    h = service.healthcheck
    if h is None:
        return None
    return {
        "Test": list(h.test),
        "Interval": int(h.interval * NANO),
        "Timeout": int(h.timeout * NANO),
        "Retries": h.retries,
        "StartPeriod": int(h.start_period * NANO),
    }


def container_spec(app: App, service: Service, order: int, overrides: Limits = Limits()) -> ContainerSpec:
    """The container of `service` of the (rendered) `app`."""
    net = network_name(app.name)
    labels = {
        **dict(service.labels),
        **object_labels(app.name),
        SERVICE_LABEL: service.name,
        ORDER_LABEL: str(order),
    }
    port_bindings: dict[str, list[dict[str, str]]] = {}
    for port in service.ports:
        key = f"{port.container}/{port.protocol}"
        # An empty HostPort lets Docker pick a free port on that address.
        port_bindings.setdefault(key, []).append(
            {"HostIp": port.host_ip, "HostPort": "" if port.host is None else str(port.host)}
        )
    mounts = []
    for vol in service.volumes:
        if vol.bind:
            mounts.append({"Type": "bind", "Source": vol.source, "Target": vol.target, "ReadOnly": vol.read_only})
        else:
            mounts.append({"Type": "volume", "Source": volume_name(app.name, vol.source), "Target": vol.target,
                           "ReadOnly": vol.read_only})
    security = list(dict.fromkeys([*service.security_opt, NO_NEW_PRIVILEGES]))
    host_config: dict[str, Any] = {
        "NetworkMode": net,
        "RestartPolicy": {"Name": RESTART_POLICY},
        "PortBindings": port_bindings,
        "Mounts": mounts,
        "SecurityOpt": security,
        "CapDrop": list(service.cap_drop) or None,
        "CapAdd": list(service.cap_add) or None,
        "ReadonlyRootfs": service.read_only,
        "Tmpfs": dict(service.tmpfs) or None,
        **resources(effective_limits(service, overrides)),
    }
    body: dict[str, Any] = {
        "Image": service.image,
        "Labels": labels,
        "Env": [f"{k}={v}" for k, v in service.environment.items()],
        "ExposedPorts": {key: {} for key in port_bindings},
        "HostConfig": {k: v for k, v in host_config.items() if v is not None},
        # Services find each other by service name on the app's network.
        "NetworkingConfig": {"EndpointsConfig": {net: {"Aliases": [service.name]}}},
    }
    if service.command is not None:
        body["Cmd"] = list(service.command)
    if service.entrypoint is not None:
        body["Entrypoint"] = list(service.entrypoint)
    if service.user is not None:
        body["User"] = service.user
    health = _healthcheck(service)
    if health is not None:
        body["Healthcheck"] = health
    if service.stop_grace_period is not None:
        body["StopTimeout"] = int(service.stop_grace_period)
    return ContainerSpec(name=container_name(app.name, service.name), app=app.name, service=service.name,
                         order=order, image=service.image, body=body, stop_timeout=service.stop_grace_period)


def app_specs(app: App, overrides: Limits = Limits()) -> list[ContainerSpec]:
    """Every container of the (rendered) app, in start order."""
    return [container_spec(app, svc, i, overrides) for i, svc in enumerate(app.start_order())]


def health_timeout(service: Service, base: float) -> float:
    """How long to wait for a service to become healthy: its start period
    plus enough probes to fail `retries` times, and `base` on top for the
    app's own start (a database initialising its files)."""
    h = service.healthcheck
    if h is None:
        return base
    return base + h.start_period + (h.interval + h.timeout) * (h.retries + 1)
