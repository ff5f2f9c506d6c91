"""Image references: the grammar of docker/distribution's reference package,
Docker's normalisation (``postgres`` is docker.io/library/postgres), and the
catalog's rule that a version is pinned (a digest, or a tag with a version
number; never ``latest``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
_IMAGE_RE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_PART}(?:/{_PATH_PART})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_PATH_PART_RE = re.compile(rf"^{_PATH_PART}$")
DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference. `registry` and `repository` are normalised
    the way Docker does (``postgres`` is ``docker.io`` / ``library/postgres``)
    so the upgrades watcher can ask the right registry."""

    text: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        return self.text

    @property
    def name(self) -> str:
        """The reference without tag and digest, as written."""
        base = self.text.split("@", 1)[0]
        return base[: -len(self.tag) - 1] if self.tag else base


def parse_image(text: str) -> ImageRef:
    """Parse an image reference; ValueError says what is wrong with it."""
    match = _IMAGE_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an image reference (e.g. postgres:17.6-alpine or ghcr.io/org/app:1.2.3)")
    domain, path = match.group("domain"), match.group("path")
    # As in Docker: the first component names a registry only when it looks
    # like a host (has a dot or a port, or is localhost); otherwise it is the
    # first path component on Docker Hub, where upper case is not allowed.
    if domain is not None and not ("." in domain or ":" in domain or domain == "localhost" or domain.startswith("[")):
        if not _PATH_PART_RE.match(domain):
            raise ValueError(f"{text!r}: repository names are lower case")
        path, domain = f"{domain}/{path}", None
    if len((f"{domain}/" if domain else "") + path) > 255:
        raise ValueError(f"{text!r}: the repository name is longer than 255 characters")
    digest = match.group("digest")
    if digest and digest.lower().startswith("sha256:") and len(digest) != len("sha256:") + 64:
        raise ValueError(f"{text!r}: a sha256 digest has 64 hex digits")
    registry = domain or DEFAULT_REGISTRY
    repository = path if domain or "/" in path else f"library/{path}"
    return ImageRef(text=text, registry=registry, repository=repository, tag=match.group("tag"), digest=digest)


def pinned_image(text: str) -> ImageRef:
    """parse_image plus the catalog's rule: the version must be fixed."""
    ref = parse_image(text)
    if ref.digest:
        return ref
    if ref.tag is None:
        raise ValueError(f"{text!r} has no tag: pin a version (e.g. {text}:1.2.3) so installs are repeatable")
    if ref.tag == "latest":
        raise ValueError(f"{text!r}: 'latest' moves; pin a version so installs are repeatable")
    if not any(ch.isdigit() for ch in ref.tag):
        raise ValueError(f"{text!r}: tag {ref.tag!r} has no version number and moves; pin a version")
    return ref
