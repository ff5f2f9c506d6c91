"""Builds the Docker images the test suite uses, from Debian's busybox-static,
with `docker import` (no image registry on the internet is reachable), and
fills the local test registry (deploy/services.sh ensure-registry).

Run it as `.venv/bin/python tests/images.py` (tests/run.sh does). It is
idempotent: an image is rebuilt only when it is missing or its recipe changed
(each image carries the hash of its recipe in the label `hp-test.recipe`).

Images, local engine:
  hp-test/busybox:1   every busybox applet, /etc/passwd with root and nobody,
                      /tmp, CMD ["sh"].
  hp-test/httpd:1     the same plus busybox httpd serving /www on port 8080
                      (runs as PID 1's child so SIGTERM stops it at once);
                      HEALTHCHECK every 1 s fetches http://127.0.0.1:8080/health,
                      so `rm /www/health` inside makes it unhealthy and
                      `echo ok > /www/health` healthy again.

Images, local registry 127.0.0.1:5000 (plain HTTP, allowed by Docker for
127.0.0.0/8), removed from the local engine after the push so that tests
really pull them:
  127.0.0.1:5000/hp-test/busybox:1, 127.0.0.1:5000/hp-test/httpd:1
  127.0.0.1:5000/hp-test/app:1.0.0, :1.1.0, :2.0.0
                      the httpd image with /VERSION and /www/version holding
                      the tag (so each tag has its own digest) and the label
                      org.opencontainers.image.version.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import struct
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

log = logging.getLogger(__name__)

BUSYBOX_IMAGE = "hp-test/busybox:1"
HTTPD_IMAGE = "hp-test/httpd:1"
HTTPD_PORT = 8080
REGISTRY = "127.0.0.1:5000"
REGISTRY_BUSYBOX = f"{REGISTRY}/hp-test/busybox:1"
REGISTRY_HTTPD = f"{REGISTRY}/hp-test/httpd:1"
APP_REPO = f"{REGISTRY}/hp-test/app"
APP_TAGS = ("1.0.0", "1.1.0", "2.0.0")

RECIPE_LABEL = "hp-test.recipe"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
LOCK_FILE = Path("/run/homeport/images.lock")
# Fixed metadata makes the layer tarball, and so its digest, reproducible.
_MTIME = 1_700_000_000

_HTTPD_CMD = (
    f"trap 'exit 0' TERM INT; httpd -f -p {HTTPD_PORT} -h /www & wait"
)
_HEALTHCHECK = (
    "HEALTHCHECK --interval=1s --timeout=2s --retries=2 "
    f'CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:{HTTPD_PORT}/health"]'
)


@dataclass(frozen=True)
class Recipe:
    """What goes into one image: files beyond the busybox base and the
    Dockerfile-style changes `docker import` applies."""

    files: dict[str, bytes] = field(default_factory=dict)
    changes: tuple[str, ...] = ()


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file():
            if _is_dynamic_elf(path.read_bytes()):
                raise SystemExit(f"{path} is dynamically linked: install busybox-static, not busybox")
            return path
    raise SystemExit("busybox not found: install Debian's busybox-static (deploy/bootstrap.sh)")


def _is_dynamic_elf(data: bytes) -> bool:
    """True when the ELF binary asks for a program interpreter (PT_INTERP),
    which an image without libc cannot provide."""
    if data[:4] != b"\x7fELF" or data[4] != 2:  # only 64-bit ELF is expected here
        return False
    endian = "<" if data[5] == 1 else ">"
    phoff = struct.unpack_from(endian + "Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == 3:
            return True
    return False


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()} - {"bin/busybox"})


def rootfs_tar(busybox: Path, applets: list[str], extra: dict[str, bytes]) -> bytes:
    """A reproducible root filesystem tarball: busybox, its applet links,
    minimal /etc, and the recipe's extra files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, _MTIME
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, _MTIME
            tar.addfile(info, io.BytesIO(data))

        dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "www", "var", "dev", "proc", "sys"}
        dirs |= {str(Path(p).parent) for p in [*applets, *extra] if str(Path(p).parent) != "."}
        for name in sorted(dirs):
            add_dir(name)
        add_dir("tmp", 0o1777)
        add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            info = tarfile.TarInfo(applet)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, "/bin/busybox", 0o777, _MTIME
            tar.addfile(info)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        for name, data in sorted(extra.items()):
            add_file(name, data)
    return buf.getvalue()


def recipes() -> dict[str, Recipe]:
    """Every image this script makes, by reference."""
    busybox = Recipe(changes=('CMD ["sh"]',))
    httpd_files = {"www/index.html": b"homeport test httpd\n", "www/health": b"ok\n"}
    httpd = Recipe(
        files=httpd_files,
        changes=(f'CMD ["sh", "-c", "{_HTTPD_CMD}"]', f"EXPOSE {HTTPD_PORT}/tcp", _HEALTHCHECK),
    )
    made = {
        BUSYBOX_IMAGE: busybox,
        HTTPD_IMAGE: httpd,
        REGISTRY_BUSYBOX: busybox,
        REGISTRY_HTTPD: httpd,
    }
    for tag in APP_TAGS:
        version = f"{tag}\n".encode()
        made[f"{APP_REPO}:{tag}"] = Recipe(
            files={**httpd_files, "VERSION": version, "www/version": version},
            changes=(*httpd.changes, f"LABEL org.opencontainers.image.version={tag}"),
        )
    return made


class Builder:
    """Builds and pushes images against one Docker engine."""

    def __init__(self, client: docker.DockerClient, busybox: Path) -> None:
        self.client = client
        self.busybox = busybox
        self.applets = _applets(busybox)

    def recipe_hash(self, recipe: Recipe) -> str:
        h = hashlib.sha256(rootfs_tar(self.busybox, self.applets, recipe.files))
        h.update(json.dumps(recipe.changes).encode())
        return h.hexdigest()[:16]

    def local_is_current(self, ref: str, want: str) -> bool:
        try:
            image = self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return (image.labels or {}).get(RECIPE_LABEL) == want

    def build(self, ref: str, recipe: Recipe, recipe_hash: str) -> None:
        repository, tag = ref.rsplit(":", 1)
        changes = [*recipe.changes, f"LABEL {RECIPE_LABEL}={recipe_hash}"]
        data = rootfs_tar(self.busybox, self.applets, recipe.files)
        answer = self.client.api.import_image_from_data(data, repository=repository, tag=tag, changes=changes)
        if "error" in str(answer).lower():
            raise SystemExit(f"docker import of {ref} failed: {answer}")
        if not self.local_is_current(ref, recipe_hash):
            raise SystemExit(f"docker import of {ref} did not produce the expected image: {answer}")

    def push(self, ref: str) -> None:
        repository, tag = ref.rsplit(":", 1)
        for line in self.client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise SystemExit(f"push of {ref} failed: {line['error']}")

    def untag(self, ref: str) -> None:
        """Drop the local copy so tests pull it; an image a running test
        container still uses stays (Docker refuses), which is harmless."""
        try:
            self.client.images.remove(ref, noprune=False)
        except docker.errors.APIError as exc:
            log.warning("could not remove local %s: %s", ref, exc)


def registry_labels(ref: str) -> dict[str, str] | None:
    """The image config labels of `ref` in the local registry, or None when
    the tag is not there."""
    host_repo, tag = ref.rsplit(":", 1)
    host, repo = host_repo.split("/", 1)
    base = f"http://{host}/v2/{repo}"
    try:
        manifest = _get_json(f"{base}/manifests/{tag}", accept=MANIFEST_TYPES)
        config = _get_json(f"{base}/blobs/{manifest['config']['digest']}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return (config.get("config") or {}).get("Labels") or {}


def _get_json(url: str, accept: str | None = None) -> dict:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def check_registry(client: docker.DockerClient) -> None:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5) as response:
            if response.status != 200:
                raise SystemExit(f"registry {REGISTRY} answered /v2/ with {response.status}")
    except OSError as exc:
        raise SystemExit(f"registry {REGISTRY} not reachable ({exc}): run deploy/services.sh ensure-registry") from exc
    # Docker treats 127.0.0.0/8 as insecure (plain HTTP) by default; an
    # engine configured otherwise would refuse the push with a TLS error.
    cidrs = client.info().get("RegistryConfig", {}).get("InsecureRegistryCIDRs") or []
    if "127.0.0.0/8" not in cidrs:
        raise SystemExit(
            f"the Docker engine does not allow plain HTTP to 127.0.0.0/8 (insecure CIDRs: {cidrs}); "
            f'add "insecure-registries": ["{REGISTRY}"] to /etc/docker/daemon.json'
        )


def ensure_images(client: docker.DockerClient) -> None:
    builder = Builder(client, find_busybox())
    check_registry(client)
    for ref, recipe in recipes().items():
        want = builder.recipe_hash(recipe)
        if ref.startswith(f"{REGISTRY}/"):
            if (registry_labels(ref) or {}).get(RECIPE_LABEL) == want:
                print(f"images: {ref} up to date in the registry")
                continue
            builder.build(ref, recipe, want)
            builder.push(ref)
            builder.untag(ref)
            if (registry_labels(ref) or {}).get(RECIPE_LABEL) != want:
                raise SystemExit(f"{ref} is not in the registry after the push")
            print(f"images: {ref} built and pushed")
        elif builder.local_is_current(ref, want):
            print(f"images: {ref} up to date")
        else:
            builder.build(ref, recipe, want)
            print(f"images: {ref} built")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="images: %(levelname)s %(message)s")
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs at once must not import and push the same tags together.
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), timeout=120)
        try:
            ensure_images(client)
        finally:
            client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
