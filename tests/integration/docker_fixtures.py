"""Pytest fixtures for tests that need a real Docker engine (a plugin listed
in tests/conftest.py).

- `docker_url`, `docker_client`: the shared engine (DOCKER_HOST or the
  standard socket). Unreachable engine = a failed test, never a skip.
- `test_image`, `httpd_image`, `registry_url`: what tests/images.py and
  deploy/services.sh prepared; each fails with the command to run when absent.
- `labelled_containers`: makes containers that look like homeport apps
  (label `homeport.app`) and removes everything the test made at teardown.
- `spare_dockerd`: a private second engine the test may stop and start, for
  "the Docker engine went away" tests, so the shared engine never stops.

Everything created carries the labels `hp-test.owner` (per test) and
`hp-test.pid` (the pytest process), so leftovers of a killed run are found
and removed by the next session, and nothing else on the engine is touched.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from tests.images import BUSYBOX_IMAGE, HTTPD_IMAGE, REGISTRY

log = logging.getLogger(__name__)

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
OWNER_LABEL = "hp-test.owner"
PID_LABEL = "hp-test.pid"
APP_LABEL = "homeport.app"
SERVICE_LABEL = "homeport.service"
ORDER_LABEL = "homeport.order"

# PID 1 in a container ignores SIGTERM unless it handles it, so a bare
# `sleep` takes the full 10 s stop timeout; this one stops at once.
SLEEPER: list[str] = ["sh", "-c", "trap 'exit 0' TERM INT; sleep 86400 & wait"]

SPARE_RUN_ROOT = Path("/run/homeport-test")
SPARE_DATA_ROOT = Path("/var/lib/homeport-test")


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test
    with `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ignore_missing(action: Any) -> None:
    try:
        action()
    except docker.errors.NotFound:
        pass


def remove_labelled(client: docker.DockerClient, label: str) -> list[str]:
    """Remove every container, network and volume carrying `label`
    ("key=value"); returns what was removed. Containers go first, since they
    hold networks and volumes; one failure does not stop the rest, and all
    failures are raised together at the end."""
    removed: list[str] = []
    failed: list[str] = []

    def remove(kind: str, name: str, action: Any) -> None:
        try:
            _ignore_missing(action)
        except docker.errors.APIError as exc:
            failed.append(f"{kind} {name}: {exc.explanation or exc}")
        else:
            removed.append(f"{kind} {name}")

    for container in client.containers.list(all=True, filters={"label": label}):
        remove("container", container.name, lambda c=container: c.remove(force=True, v=True))
    for network in client.networks.list(filters={"label": label}):
        remove("network", network.name, network.remove)
    for volume in client.volumes.list(filters={"label": label}):
        remove("volume", volume.name, lambda v=volume: v.remove(force=True))
    if failed:
        raise RuntimeError(f"could not remove test objects labelled {label}: " + "; ".join(failed))
    return removed


def label_values(client: docker.DockerClient, label: str) -> set[str]:
    """Every value of `label` on containers, networks and volumes."""
    values = {c.labels.get(label, "") for c in client.containers.list(all=True, filters={"label": label})}
    for obj in [*client.networks.list(filters={"label": label}), *client.volumes.list(filters={"label": label})]:
        values.add((obj.attrs.get("Labels") or {}).get(label, ""))
    return values


def sweep_dead_sessions(client: docker.DockerClient) -> None:
    """Remove what test sessions that no longer run left behind (a killed
    pytest cannot tear down); live sessions, e.g. a colleague's, are kept."""
    for pid in sorted(label_values(client, PID_LABEL)):
        if pid.isdigit() and not _pid_alive(int(pid)):
            removed = remove_labelled(client, f"{PID_LABEL}={pid}")
            log.info("removed leftovers of dead test session %s: %s", pid, ", ".join(removed))


@pytest.fixture(scope="session")
def docker_url() -> str:
    """Where the shared engine listens, in docker-py's URL form."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_URL


@pytest.fixture(scope="session")
def docker_client(docker_url: str) -> Iterator[docker.DockerClient]:
    try:
        # The constructor already asks the engine for its API version.
        client = docker.DockerClient(base_url=docker_url, timeout=60)
        client.ping()
    except Exception as exc:  # any failure means the same thing here
        pytest.fail(
            f"Docker engine not reachable at {docker_url} ({exc}); "
            "start it with `bash deploy/services.sh ensure-dockerd` or run the suite via tests/run.sh",
            pytrace=False,
        )
    sweep_dead_sessions(client)
    yield client
    client.close()


def _require_image(client: docker.DockerClient, ref: str) -> str:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        pytest.fail(f"test image {ref} is missing; build it with `.venv/bin/python tests/images.py`", pytrace=False)
    return ref


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient) -> str:
    """busybox with every applet; CMD sh."""
    return _require_image(docker_client, BUSYBOX_IMAGE)


@pytest.fixture(scope="session")
def httpd_image(docker_client: docker.DockerClient) -> str:
    """busybox httpd on port 8080 with a 1 s HEALTHCHECK on /www/health."""
    return _require_image(docker_client, HTTPD_IMAGE)


@pytest.fixture(scope="session")
def registry_url() -> str:
    """host:port of the local plain-HTTP registry holding the hp-test/* tags
    (see tests/images.py)."""
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5) as response:
            status = response.status
    except OSError as exc:
        pytest.fail(f"registry {REGISTRY} not reachable ({exc}); run `bash deploy/services.sh ensure-registry`",
                    pytrace=False)
    if status != 200:
        pytest.fail(f"registry {REGISTRY} answered /v2/ with HTTP {status}", pytrace=False)
    return REGISTRY


class LabelledContainers:
    """Factory for containers that homeport sees as apps. Names start with
    `prefix`, unique to the test; `cleanup()` (also run at teardown) removes
    the containers, networks and volumes labelled with `owner_labels`, and
    everything of the apps passed to `adopt_app`."""

    def __init__(self, client: docker.DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        self.token = secrets.token_hex(3)
        self.prefix = f"hpt-{self.token}-"
        self.owner_labels: dict[str, str] = {OWNER_LABEL: self.token, PID_LABEL: str(os.getpid())}
        self._adopted: set[str] = set()
        self._count = 0

    def __call__(
        self,
        app: str,
        command: str | list[str] | None = SLEEPER,
        *,
        service: str | None = None,
        order: int | None = None,
        image: str | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        start: bool = True,
        **create_kwargs: Any,
    ) -> Container:
        """Create (and by default start) a container of `app`. `command`
        defaults to SLEEPER, None means the image's CMD; `create_kwargs` go
        to docker-py's containers.create (e.g. healthcheck, restart_policy,
        mem_limit)."""
        self._count += 1
        all_labels = {**(labels or {}), APP_LABEL: app, **self.owner_labels}
        if service is not None:
            all_labels[SERVICE_LABEL] = service
        if order is not None:
            all_labels[ORDER_LABEL] = str(order)
        container = self.client.containers.create(
            image or self.image,
            list(command) if isinstance(command, list) else command,
            name=name or f"{self.prefix}{app}-{service or 'main'}-{self._count}",
            labels=all_labels,
            detach=True,
            **create_kwargs,
        )
        if start:
            container.start()
        container.reload()
        return container

    def app_name(self, base: str) -> str:
        """An app name unique to this test (matching homeport's
        `^[a-z][a-z0-9-]{0,30}$` for a short `base`), so tests sharing the
        engine never see each other's apps."""
        return f"{base}-{self.token}"

    def adopt_app(self, app: str) -> None:
        """Also remove, at cleanup, everything labelled homeport.app=`app`:
        for apps the bot itself creates during the test."""
        self._adopted.add(app)

    def cleanup(self) -> list[str]:
        removed = remove_labelled(self.client, f"{OWNER_LABEL}={self.token}")
        for app in sorted(self._adopted):
            removed += remove_labelled(self.client, f"{APP_LABEL}={app}")
        return removed


@pytest.fixture
def labelled_containers(docker_client: docker.DockerClient, test_image: str) -> Iterator[LabelledContainers]:
    factory = LabelledContainers(docker_client, test_image)
    yield factory
    factory.cleanup()


class SpareDockerd:
    """A second dockerd owned by the test session: its own socket, data root,
    exec root (and so its own containerd) and network namespace, so neither
    running nor stopping it disturbs the shared engine. Its containers are
    not reachable from the host's network (nor is the host's 127.0.0.1 from
    them): it is an engine to stop and start, not a place to publish ports."""

    def __init__(self, session_id: str, source: docker.DockerClient, images: list[str]) -> None:
        self.run_dir = SPARE_RUN_ROOT / f"spare-{session_id}"
        self.data_dir = SPARE_DATA_ROOT / f"spare-{session_id}"
        self.socket = self.run_dir / "docker.sock"
        self.url = f"unix://{self.socket}"
        # containerd's sockets live under the exec root; unix socket paths
        # are limited to 107 bytes, so keep it short.
        self.exec_root = self.run_dir / "x"
        self.pidfile = self.run_dir / "dockerd.pid"
        self.log_path = self.data_dir / "dockerd.log"
        self.start_durations: list[float] = []
        self._source = source
        self._images = images
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._loaded = False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    @property
    def last_start_seconds(self) -> float | None:
        return self.start_durations[-1] if self.start_durations else None

    def command(self) -> list[str]:
        # A network namespace of its own: dockerd rewrites host networking
        # (docker0, iptables chains, sysctls), and `--bridge=none` even
        # DELETES the host's docker0, breaking the shared engine. Inside its
        # own namespace it keeps default settings, like a real engine.
        # unshare and sh exec, so the Popen pid is dockerd's.
        return [
            "unshare", "--net", "--",
            "sh", "-c", 'if command -v ip >/dev/null; then ip link set lo up; fi; exec "$@"', "sh",
            "dockerd",
            # An empty config file, so /etc/docker/daemon.json (hosts, data
            # root...) of the machine cannot leak in.
            "--config-file", str(self.run_dir / "daemon.json"),
            "--host", self.url,
            "--data-root", str(self.data_dir / "data"),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile),
            # If a system containerd runs, dockerd 20.10 uses it instead of
            # its own; separate namespaces keep the two engines apart then.
            "--containerd-namespace", "hp-spare",
            "--containerd-plugins-namespace", "hp-spare-plugins",
        ]

    def client(self) -> docker.DockerClient:
        """A docker-py client for this engine (shared; do not close it)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, timeout=60)
        return self._client

    def _answers(self) -> bool:
        try:
            # The constructor already asks the engine for its API version.
            probe = docker.DockerClient(base_url=self.url, timeout=2)
        except docker.errors.DockerException:
            return False
        try:
            return bool(probe.ping())
        except Exception:  # not up yet: any error means "ask again"
            return False
        finally:
            probe.close()

    def start(self, timeout: float = 60.0) -> float:
        """Start the engine and wait until it answers; returns the seconds
        that took (also kept in `start_durations`)."""
        if self.running:
            raise RuntimeError(f"spare dockerd already running (pid {self.pid})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "daemon.json").write_text("{}\n")
        began = time.monotonic()
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the terminal goes to pytest, which stops it in order
            )
        deadline = began + timeout
        try:
            while not self._answers():
                if self._proc.poll() is not None:
                    raise RuntimeError(f"spare dockerd exited with {self._proc.returncode}:\n{self.log_tail()}")
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"spare dockerd did not answer within {timeout:.0f}s:\n{self.log_tail()}")
                time.sleep(0.05)
            took = time.monotonic() - began
            self.start_durations.append(took)
            log.info("spare dockerd (pid %s) ready in %.2fs", self._proc.pid, took)
            if not self._loaded:
                self._load_images()
        except BaseException:
            # Half started is worse than stopped: nobody would stop it.
            self._terminate()
            raise
        return took

    def _load_images(self) -> None:
        """Copy the test images from the shared engine (save/load keeps the
        image IDs identical on both engines)."""
        for ref in self._images:
            data = b"".join(self._source.images.get(ref).save(named=True))
            self.client().images.load(data)
        self._loaded = True

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM the engine and wait for it (and its containerd) to exit;
        returns the seconds that took. Running containers are stopped by
        dockerd, each within its stop timeout: use TERM-aware commands
        (SLEEPER) to keep this fast."""
        if not self.running or self._proc is None:
            raise RuntimeError("spare dockerd is not running")
        began = time.monotonic()
        self._close_client()
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._terminate()
            raise RuntimeError(f"spare dockerd did not exit within {timeout:.0f}s of SIGTERM; killed it")
        wait_for(lambda: not self.socket.exists(), 5, "the spare dockerd socket to disappear")
        return time.monotonic() - began

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def reset(self) -> None:
        """Remove every container, volume and user network of this engine,
        so the next test starts from a clean engine with the images only."""
        client = self.client()
        for container in client.containers.list(all=True):
            _ignore_missing(lambda c=container: c.remove(force=True, v=True))
        for volume in client.volumes.list():
            _ignore_missing(lambda v=volume: v.remove(force=True))
        for network in client.networks.list():
            if network.name not in ("bridge", "host", "none"):
                _ignore_missing(network.remove)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def destroy(self) -> None:
        """Stop the engine if needed and delete its directories."""
        if self.running:
            try:
                for container in self.client().containers.list():
                    _ignore_missing(lambda c=container: c.kill())
            except docker.errors.APIError:
                pass
            self.stop()
        self._close_client()
        _remove_tree(self.run_dir)
        _remove_tree(self.data_dir)


def _remove_tree(path: Path) -> None:
    """Delete a spare engine's directory, unmounting what a crashed engine
    may have left mounted inside it first."""
    if not path.exists():
        return
    prefix = str(path) + "/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _sweep_dead_spares() -> None:
    """Stop and delete spare engines of test sessions that are gone."""
    for run_dir in sorted(SPARE_RUN_ROOT.glob("spare-*")) + sorted(SPARE_DATA_ROOT.glob("spare-*")):
        owner = run_dir.name.removeprefix("spare-")
        if not owner.isdigit() or _pid_alive(int(owner)):
            continue
        pidfile = SPARE_RUN_ROOT / run_dir.name / "dockerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            pid, cmdline = 0, ""
        # Only a dockerd whose command line names this very directory is ours.
        if pid and str(SPARE_RUN_ROOT / run_dir.name) in cmdline:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not _pid_alive(pid), 60, f"stale spare dockerd {pid} to exit")
        _remove_tree(run_dir)


@pytest.fixture(scope="session")
def spare_dockerd_session(docker_client: docker.DockerClient, test_image: str,
                          httpd_image: str) -> Iterator[SpareDockerd]:
    """The session's spare engine; prefer `spare_dockerd`, which hands it to
    each test running and empty."""
    if os.geteuid() != 0:
        pytest.fail("spare_dockerd needs root to run a second dockerd", pytrace=False)
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd not installed; run `bash deploy/bootstrap.sh`", pytrace=False)
    _sweep_dead_spares()
    spare = SpareDockerd(str(os.getpid()), docker_client, [test_image, httpd_image])
    try:
        spare.start()
    except Exception as exc:
        spare.destroy()
        pytest.fail(f"spare dockerd: {exc}", pytrace=False)
    yield spare
    log.info("spare dockerd start times: %s", json.dumps([round(s, 3) for s in spare.start_durations]))
    spare.destroy()


@pytest.fixture
def spare_dockerd(spare_dockerd_session: SpareDockerd) -> Iterator[SpareDockerd]:
    """A private engine (`.url`, `.client()`, `.stop()`, `.start()`) with the
    test images loaded, running and empty when the test begins; whatever the
    test leaves (stopped engine, containers) is undone afterwards."""
    spare = spare_dockerd_session
    if not spare.running:
        spare.start()
    spare.reset()
    yield spare
    if not spare.running:
        spare.start()
    spare.reset()
