"""What the catalog refuses, and why: the rules that keep a catalog entry
from handing the host to a container.

Everything here is data or a small check, so the whole policy can be read in
one place (catalog/README.md explains it to owners): which Compose keys are
refused, which capabilities may be added back, which security options are
allowed, and which host folders may be bound (read-only, and never the
host's root, the Docker socket or a system location).
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from types import MappingProxyType

from bot.catalog.errors import Invalid

log = logging.getLogger(__name__)

# Ports publish on loopback unless the file names another address: a reverse
# proxy in front (or an explicit 0.0.0.0) is the owner's decision.
DEFAULT_HOST_IP = "127.0.0.1"
RESERVED_LABEL_PREFIX = "homeport."
PRIVILEGED_REASON = "privileged containers are refused: they get every capability and every host device"

ALL_CAPABILITIES = frozenset(
    """AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND BPF CHECKPOINT_RESTORE CHOWN
    DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL LEASE
    LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE
    NET_BROADCAST NET_RAW PERFMON SETFCAP SETGID SETPCAP SETUID SYS_ADMIN SYS_BOOT
    SYS_CHROOT SYS_MODULE SYS_NICE SYS_PACCT SYS_PTRACE SYS_RAWIO SYS_RESOURCE
    SYS_TIME SYS_TTY_CONFIG SYSLOG WAKE_ALARM""".split()
)
# Docker's default set: adding one of these back after `cap_drop: [ALL]`
# gives a container no more than a plain `docker run` would. Anything else
# (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, ALL …) widens the host's attack surface.
ADDABLE_CAPABILITIES = frozenset(
    """AUDIT_WRITE CHOWN DAC_OVERRIDE FOWNER FSETID KILL MKNOD NET_BIND_SERVICE
    NET_RAW SETFCAP SETGID SETPCAP SETUID SYS_CHROOT""".split()
)
NO_NEW_PRIVILEGES = "no-new-privileges:true"

# Host paths a bind mount may neither be nor contain nor lie inside: system
# files, kernel interfaces, devices, the engine's state and sockets. Binding an
# ancestor ("/var") would expose them too, so ancestors are refused as well.
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
DENIED_HOST_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib",
    "/var/run",
)

# Compose keys homeport refuses on a service, with the reason the owner sees.
REFUSED_SERVICE_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "pid": "sharing the host's (or another container's) process namespace is refused: "
        "the container could see and signal every process",
        "network_mode": "network_mode is refused: each app runs on a network of its own made by homeport; "
        "host networking would bypass it and expose every port the app opens",
        "networks": "homeport puts each app on a network of its own; services reach each other by service name",
        "ipc": "sharing an IPC namespace is refused: ipc: host exposes the host's shared memory",
        "userns_mode": "userns_mode is refused: userns_mode: host turns off the engine's user-namespace remapping",
        "uts": "uts is refused: uts: host lets the container change the host's hostname",
        "cgroup": "cgroup is refused: cgroup: host exposes the host's cgroup tree",
        "cgroup_parent": "cgroup_parent is refused: homeport places and limits containers itself",
        "devices": "host devices are refused: a device node gives the container direct access to host hardware",
        "device_cgroup_rules": "device rules are refused: they open host devices to the container",
        "volumes_from": "volumes_from is refused: mounts are declared explicitly so backups and purges know them",
        "sysctls": "sysctls are refused: kernel parameters stay the host's business",
        "runtime": "another container runtime is refused",
        "container_name": "homeport names containers itself (app and service name)",
        "restart": "homeport sets the restart policy itself",
        "build": "catalog apps run published images: build yours elsewhere and name it in image",
        "env_file": "environment comes only from the catalog file and the app's settings",
        "expose": "not needed: services on the app's network reach each other on every port",
        "mem_limit": "use limits: {memory: …}",
        "memswap_limit": "use limits: {memory: …}; homeport gives containers no swap beyond it",
        "cpus": "use limits: {cpus: …}",
        "pids_limit": "use limits: {pids: …}",
        "deploy": "use limits: {memory, cpus, pids}",
        "secrets": "use settings with secret: generate or secret: ask",
        "configs": "configuration files are not supported: use environment and command",
    }
)
REFUSED_APP_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "version": "there is no version key: the format is described in catalog/README.md",
        "volumes": "named volumes are declared by using them in a service's volumes",
        "networks": "homeport puts each app on a network of its own",
        "secrets": "use settings with secret: generate or secret: ask",
        "configs": "configuration files are not supported: use environment and command",
    }
)


def within(path: str, root: str) -> bool:
    """`path` is `root` or lies inside it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_bind(source: str, read_only: bool, path: str) -> None:
    """The bind-mount rule: read-only host folders only, never the host's
    root, the Docker socket (or any socket) or a system location, nor a
    folder that contains one (binding /var would expose /var/run/docker.sock,
    and a socket stays usable on a read-only mount)."""
    if source != "/" and posixpath.normpath(source) != source.rstrip("/"):
        raise Invalid(path, f"host path {source!r} must be absolute and normalised (no '.', '..' or '//')")
    if source == "/":
        raise Invalid(path, "binding the host's root filesystem / is refused: it exposes every file on the host")
    if source.endswith(".sock") or any(within(sock, source) or within(source, sock) for sock in DOCKER_SOCKETS):
        raise Invalid(
            path,
            f"binding {source} is refused: the Docker socket (or any host socket) "
            "gives the container control of the host",
        )
    for denied in DENIED_HOST_PATHS:
        if within(source, denied) or within(denied, source):
            raise Invalid(path, f"binding {source} is refused: it is (or contains) the system location {denied}")
    if not read_only:
        raise Invalid(
            path,
            f"host folder {source} may only be bound read-only (add :ro); "
            "data the app writes belongs in a named volume homeport can back up and purge",
        )


def check_cap_add(cap: str, path: str) -> None:
    """Only Docker's default capabilities may be added back."""
    if cap not in ADDABLE_CAPABILITIES:
        raise Invalid(
            path,
            f"{cap} is refused: only Docker's default capabilities may be added back "
            f"({', '.join(sorted(ADDABLE_CAPABILITIES))})",
        )


def security_option(text: str, path: str) -> str:
    """The one allowed security option, normalised; anything else refused."""
    if text.strip().replace("=", ":") in ("no-new-privileges", NO_NEW_PRIVILEGES):
        return NO_NEW_PRIVILEGES
    raise Invalid(
        path,
        f"{text!r} is refused: only no-new-privileges:true is allowed "
        "(seccomp, AppArmor and SELinux stay at the engine's defaults)",
    )
