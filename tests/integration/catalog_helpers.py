"""Test-catalog copies with app names of their own, for install tests on the
shared Docker engine.

The fixture apps (tests/fixtures/catalog: pair, solo, unhealthy …) have
fixed names, so two test sessions (or a killed one's leftovers) would fight
over `pair-web` and `hp-pair`. `TestCatalog` copies the files a test asks for
into a temporary folder under names unique to the test,
`<app>-<pytest pid>-<hex>`, adopts them for cleanup (containers, networks
and volumes labelled `homeport.app=<name>` go at teardown), and first sweeps
what dead test sessions left of such copies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.docker_fixtures import APP_LABEL, LabelledContainers, _pid_alive, label_values, remove_labelled

log = logging.getLogger(__name__)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SOURCE = FIXTURES / "catalog"
BAD = FIXTURES / "catalog-bad"
COPY_NAME = re.compile(r"^[a-z][a-z0-9-]*?-(\d+)-[0-9a-f]{4}$")


async def until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` without blocking the event loop (the bot's tasks run
    on it) until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def sweep_dead_copies(client: docker.DockerClient) -> None:
    """Remove the objects of test-catalog copies whose pytest is gone."""
    for app in sorted(label_values(client, APP_LABEL)):
        match = COPY_NAME.match(app)
        if match and not _pid_alive(int(match.group(1))):
            removed = remove_labelled(client, f"{APP_LABEL}={app}")
            log.info("removed leftovers of test app %s: %s", app, ", ".join(removed))


class TestCatalog:
    """A catalog folder of renamed fixture apps for one test."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, root: Path, labelled: LabelledContainers) -> None:
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.labelled = labelled
        self.suffix = f"{os.getpid()}-{secrets.token_hex(2)}"

    def name(self, base: str) -> str:
        return f"{base}-{self.suffix}"

    def app(self, base: str, source: Path = SOURCE, text: str | None = None) -> str:
        """Copy fixture app `base` (or write `text` as app `base`) under a
        unique name; the name, adopted for cleanup."""
        name = self.name(base)
        if text is None:
            text = (source / f"{base}.yaml").read_text()
        renamed, count = re.subn(r"^name: .*$", f"name: {name}", text, count=1, flags=re.M)
        assert count == 1, f"no name: line in {base}"
        (self.dir / f"{name}.yaml").write_text(renamed)
        self.labelled.adopt_app(name)
        return name

    def bad(self, base: str) -> Path:
        """A refused file from tests/fixtures/catalog-bad, as it is."""
        target = self.dir / f"{base}.yaml"
        shutil.copy(BAD / f"{base}.yaml", target)
        return target


@pytest.fixture
def test_catalog(tmp_path: Path, docker_client: docker.DockerClient,
                 labelled_containers: LabelledContainers) -> Iterator[TestCatalog]:
    sweep_dead_copies(docker_client)
    yield TestCatalog(tmp_path / "catalog", labelled_containers)
