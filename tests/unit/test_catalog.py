"""The catalog: shipped apps pass and are hardened, every refusal gives its
one-line message, folders override in order, settings are checked and
rendered, and an app survives a JSON round trip unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bot.catalog import (
    App,
    CatalogError,
    Setting,
    SettingError,
    UpgradeRule,
    check_dirs,
    check_file,
    derive_tag_pattern,
    generate_secret,
    load_catalog,
    missing_settings,
    parse_app,
    parse_image,
    read_app,
    render,
    resolve_values,
    validate_setting,
)
from bot.catalog.yamlsafe import load_yaml

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "catalog"
FIXTURES = ROOT / "tests" / "fixtures"
TEST_CATALOG = FIXTURES / "catalog"
OVERRIDE = FIXTURES / "catalog-override"
BAD = FIXTURES / "catalog-bad"

SHIPPED_FILES = sorted(SHIPPED.glob("*.yaml"))


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


MINIMAL = """\
name: {name}
description: A test app
services:
  web:
    image: nginx:1.27.3
    limits: {{memory: 64m}}
"""


# --------------------------------------------------------------------------
# The shipped catalog


def test_shipped_catalog_has_at_least_eight_apps_and_no_errors() -> None:
    assert check_dirs([SHIPPED]) == []
    catalog = load_catalog([SHIPPED])
    assert len(catalog) >= 8
    # blog, chat, wiki, forge, feeds, passwords, file sync, and one more
    assert {"ghost", "ejabberd", "wikijs", "gitea", "miniflux", "vaultwarden", "syncthing"} <= set(catalog.names())


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_shipped_app_is_pinned_limited_checked_and_hardened(path: Path) -> None:
    app = read_app(path)
    assert app.name == path.stem
    for svc in app.services:
        ref = parse_image(svc.image)
        assert ref.digest or (ref.tag and ref.tag != "latest" and re.search(r"\d", ref.tag)), svc.image
        assert svc.limits.memory is not None and svc.limits.memory <= 1024**3, f"{svc.name}: memory limit"
        assert svc.healthcheck is not None, f"{svc.name}: health check"
        assert "no-new-privileges:true" in svc.security_opt, f"{svc.name}: no-new-privileges"
        assert svc.cap_drop == ("ALL",), f"{svc.name}: drops every capability"
        assert all(not p.public for p in svc.ports), f"{svc.name}: ports bind to loopback"
        assert all(not v.bind for v in svc.volumes), f"{svc.name}: named volumes only"
        assert svc.upgrade.tags is not None and svc.upgrade.version(ref.tag or "") is not None
    # The app's data is in named volumes the backup covers.
    assert set(app.backup.volumes) <= set(app.volume_names())
    # Passwords of databases are generated, never typed or fixed in the file.
    for svc in app.services:
        for key, value in svc.environment.items():
            if re.search(r"PASS|PASSWD|password", key) and "{{" not in value:
                pytest.fail(f"{svc.name}.{key} holds a fixed password")


def test_shipped_apps_can_all_be_installed_side_by_side() -> None:
    seen: dict[tuple[int, str], str] = {}
    for app in load_catalog([SHIPPED]):
        for svc in app.services:
            for port in svc.ports:
                key = (port.host, port.protocol)
                assert port.host is not None
                assert key not in seen, f"{app.name}/{svc.name} and {seen[key]} both publish {key}"
                seen[key] = f"{app.name}/{svc.name}"


def test_test_catalog_passes_and_uses_only_local_images() -> None:
    assert check_dirs([TEST_CATALOG, OVERRIDE]) == []
    for app in load_catalog([TEST_CATALOG]):
        for svc in app.services:
            ref = parse_image(svc.image)
            assert ref.repository.startswith("hp-test/") and ref.registry in ("docker.io", "127.0.0.1:5000")


def test_pair_fixture_services_reach_each_other_by_name() -> None:
    app = load_catalog([TEST_CATALOG]).get("pair")
    assert app is not None
    assert [s.name for s in app.start_order()] == ["web", "client"]
    client = app.service("client")
    assert client.depends_on == {"web": "service_healthy"}
    assert client.healthcheck is not None and "http://web:8080/" in client.healthcheck.test
    # App-level limits are defaults; a service's own value wins.
    assert app.service("web").limits.memory == 32 * 1024**2
    assert app.service("web").limits.cpus == 0.5
    assert client.limits.pids == 64


# --------------------------------------------------------------------------
# Refusals: one file per rule, one line naming file, app and field

REFUSALS: dict[str, tuple[str, str]] = {
    # file stem: (field, part of the reason)
    "anonymous-volume": ("services.web.volumes[0]", "anonymous volumes are refused"),
    "app-name": ("name", "must start with a letter"),
    "backup-unknown-volume": ("backup.volumes[1]", "not a named volume of this app"),
    "bad-default": ("settings.port.default", "not a port number"),
    "bad-memory": ("services.web.limits.memory", "not a size"),
    "binary-tag": ("line 3", "YAML tag !!binary is refused"),
    "cap-all": ("services.web.cap_add[0]", "ALL is refused"),
    "cap-net-admin": ("services.web.cap_add[0]", "NET_ADMIN is refused"),
    "cap-sys-admin": ("services.web.cap_add[0]", "SYS_ADMIN is refused"),
    "cap-sys-ptrace": ("services.web.cap_add[0]", "SYS_PTRACE is refused"),
    "compose-version": ("version", "there is no version key"),
    "custom-tag": ("line 8", "YAML tag !include is refused"),
    "depends-cycle": ("services.a.depends_on", "dependency cycle: a -> b -> a"),
    "depends-unknown": ("services.web.depends_on.database", "unknown service"),
    "devices": ("services.web.devices", "host devices are refused"),
    "docker-socket": ("services.web.volumes[0]", "Docker socket"),
    "duplicate-key": ("line 7", "duplicate key 'image'"),
    "duplicate-port": ("services.b.ports[0]", "host port 8080/tcp is already used by services.a.ports[0]"),
    "env-boolean": ("services.web.environment.DEBUG", "quote it"),
    "env-no-value": ("services.web.environment[0]", "has no value"),
    "healthy-without-check": ("services.web.depends_on.db", "service_healthy needs a healthcheck"),
    "image-bad-reference": ("services.web.image", "is not an image reference"),
    "image-floating": ("services.web.image", "has no version number"),
    "image-latest": ("services.web.image", "'latest' moves"),
    "image-untagged": ("services.web.image", "has no tag"),
    "ipc-host": ("services.web.ipc", "ipc: host"),
    "name-mismatch": ("name", "differs from the file name"),
    "network-host": ("services.web.network_mode", "network_mode is refused"),
    "no-memory-limit": ("services.web.limits.memory", "required"),
    "not-a-mapping": ("", "a catalog file is a mapping"),
    "parent-of-socket-bind": ("services.web.volumes[0]", "binding /var is refused"),
    "pid-host": ("services.web.pid", "process namespace is refused"),
    "port-number": ("services.web.ports[0]", "not a port number"),
    "port-range": ("services.web.ports[0]", "port ranges are not supported"),
    "port-syntax": ("services.web.ports[0]", "is not [HOST_IP:][HOST_PORT:]CONTAINER_PORT"),
    "privileged": ("services.web.privileged", "privileged containers are refused"),
    "python-tag": ("line 3", "YAML tag !!python/object/apply:os.system is refused"),
    "relative-bind": ("services.web.volumes[0]", "relative host paths are refused"),
    "reserved-label": ("services.web.labels.homeport.app", "set by homeport itself"),
    "root-bind": ("services.web.volumes[0]", "root filesystem / is refused"),
    "seccomp-unconfined": ("services.web.security_opt[0]", "'seccomp=unconfined' is refused"),
    "secret-in-notes": ("notes", "is a secret"),
    "service-name": ("services.Web_1", "service name 'Web_1'"),
    "service-network": ("services.web.networks", "network of its own"),
    "setting-name": ("settings[0].name", "setting 'Domain'"),
    "system-bind": ("services.web.volumes[0]", "system location /etc"),
    "two-documents": ("line 8", "one YAML document per file"),
    "unknown-key": ("volume", "unknown key"),
    "unknown-placeholder": ("services.web.environment.URL", "unknown placeholder {{ domian }}"),
    "unknown-service-key": ("services.web.healthchek", "did you mean healthcheck?"),
    "unquoted-placeholder": ("line 13", "quote a value that starts with {"),
    "unused-setting": ("settings.domain", "never used"),
    "upgrade-mismatch": ("services.web.upgrade.tags", "does not match"),
    "userns-host": ("services.web.userns_mode", "userns_mode is refused"),
    "volume-name": ("services.web.volumes[0]", "volume name 'Data_1'"),
    "writable-bind": ("services.web.volumes[0]", "may only be bound read-only"),
    "wrong-type": ("services.web.ports", "expected a list, found a string"),
    "yaml-syntax": ("line 7", "YAML: expected <block end>"),
}


def test_every_refusal_fixture_has_an_expectation() -> None:
    assert {p.stem for p in BAD.glob("*.yaml")} == set(REFUSALS)


@pytest.mark.parametrize("stem", sorted(REFUSALS))
def test_refusal_gives_one_line_naming_file_app_and_field(stem: str) -> None:
    path = BAD / f"{stem}.yaml"
    field, reason = REFUSALS[stem]
    app, problems = check_file(path)
    assert app is None
    assert len(problems) == 1, [str(p) for p in problems]
    line = str(problems[0])
    assert "\n" not in line
    prefix = f"{path}: app {stem}: " + (f"{field}: " if field else "")
    assert line.startswith(prefix), line
    assert reason in line, line
    # read_app raises the same line
    with pytest.raises(CatalogError) as raised:
        read_app(path)
    assert str(raised.value) == line


def test_load_catalog_refuses_a_folder_with_a_bad_file(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", MINIMAL.format(name="good"))
    write(tmp_path, "bad.yaml", MINIMAL.format(name="bad") + "    privileged: true\n")
    with pytest.raises(CatalogError) as raised:
        load_catalog([tmp_path])
    assert str(raised.value) == (
        f"{tmp_path / 'bad.yaml'}: app bad: services.web.privileged: "
        "privileged containers are refused: they get every capability and every host device"
    )


def test_check_dirs_lists_every_problem_of_every_file(tmp_path: Path) -> None:
    write(tmp_path, "two.yaml", MINIMAL.format(name="two") + "    pid: host\n    cap_add: [SYS_ADMIN]\n")
    write(tmp_path, "one.yaml", MINIMAL.format(name="one").replace("nginx:1.27.3", "nginx:latest"))
    write(tmp_path, "fine.yaml", MINIMAL.format(name="fine"))
    lines = check_dirs([tmp_path, tmp_path / "missing"])
    assert lines == [
        f"{tmp_path / 'one.yaml'}: app one: services.web.image: 'nginx:latest': 'latest' moves; "
        "pin a version so installs are repeatable",
        f"{tmp_path / 'two.yaml'}: app two: services.web.pid: sharing the host's (or another container's) "
        "process namespace is refused: the container could see and signal every process",
        f"{tmp_path / 'two.yaml'}: app two: services.web.cap_add[0]: SYS_ADMIN is refused: only Docker's "
        "default capabilities may be added back (AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, "
        "MKNOD, NET_BIND_SERVICE, NET_RAW, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT)",
        f"{tmp_path / 'missing'}: catalog folder not found",
    ]


def test_refused_bad_folder_lists_one_line_per_file() -> None:
    lines = check_dirs([BAD])
    assert len(lines) == len(REFUSALS)
    assert all(line.startswith(str(BAD)) for line in lines)


# --------------------------------------------------------------------------
# YAML: plain data only


def test_python_tag_is_refused_before_anything_is_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write(
        tmp_path,
        "evil.yaml",
        f'name: evil\ndescription: !!python/object/apply:os.system ["touch {marker}"]\n'
        "services: {web: {image: 'nginx:1.27.3', limits: {memory: 64m}}}\n",
    )
    _, problems = check_file(path)
    assert [str(p) for p in problems] == [
        f"{path}: app evil: line 2: YAML tag !!python/object/apply:os.system is refused: "
        "a catalog file is plain data (maps, lists, strings, numbers, booleans)"
    ]
    assert not marker.exists()


def test_anchors_aliases_and_merge_keys_are_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "anchors.yaml",
        """\
name: anchors
description: Uses anchors
x-base: &base
  security_opt: [no-new-privileges:true]
  cap_drop: [ALL]
  limits: {memory: 64m}
services:
  a:
    <<: *base
    image: nginx:1.27.3
  b:
    <<: *base
    image: nginx:1.27.3
    limits: {memory: 128m}
""",
    )
    app = read_app(path)
    assert app.service("a").cap_drop == ("ALL",)
    assert app.service("b").limits.memory == 128 * 1024**2


def test_base_sixty_numbers_and_dates_stay_strings(tmp_path: Path) -> None:
    # YAML 1.1 would read 22:22 as 1342 and 1000:1000 as 61000.
    path = write(
        tmp_path,
        "sixty.yaml",
        MINIMAL.format(name="sixty") + "    ports: [22:22]\n    user: 1000:1000\n"
        "    environment: {RELEASED: 2024-01-02}\n",
    )
    svc = read_app(path).main
    assert (svc.ports[0].host, svc.ports[0].container) == (22, 22)
    assert svc.user == "1000:1000"
    assert svc.environment["RELEASED"] == "2024-01-02"


# --------------------------------------------------------------------------
# Folders: later ones add apps or override earlier ones by name


def test_later_folder_overrides_and_adds() -> None:
    catalog = load_catalog([TEST_CATALOG, OVERRIDE])
    solo = catalog.get("solo")
    assert solo is not None and solo.description == "Test solo, overridden by a later catalog folder"
    assert solo.source == str(OVERRIDE / "solo.yaml")
    assert "extra" in catalog and "pair" in catalog
    assert catalog.names() == sorted(catalog.names())
    assert catalog.get("nope") is None

    reversed_order = load_catalog([OVERRIDE, TEST_CATALOG]).get("solo")
    assert reversed_order is not None and reversed_order.description == "Test solo, a single sleeping container"


def test_missing_folder_and_duplicate_in_one_folder(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="catalog folder not found"):
        load_catalog([tmp_path / "nowhere"])
    write(tmp_path, "twice.yaml", MINIMAL.format(name="twice"))
    write(tmp_path, "twice.yml", MINIMAL.format(name="twice"))
    assert check_dirs([tmp_path]) == [
        f"{tmp_path / 'twice.yml'}: app twice: the app is already defined by {tmp_path / 'twice.yaml'}"
    ]


def test_non_yaml_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "# notes")
    write(tmp_path, "app.yaml", MINIMAL.format(name="app"))
    assert load_catalog([tmp_path]).names() == ["app"]


# --------------------------------------------------------------------------
# Fields


def parse(text: str) -> App:
    app, problems = parse_app(load_yaml(text), "<test>")
    assert not problems, [str(p) for p in problems]
    assert app is not None
    return app


def problems_of(text: str) -> list[str]:
    _, problems = parse_app(load_yaml(text), "<test>")
    return [str(p) for p in problems]


def test_ports_bind_to_loopback_unless_an_address_is_given() -> None:
    app = parse(
        MINIMAL.format(name="p")
        + '    ports: ["80", "8080:80", "0.0.0.0:9000:9000/udp", "[::1]:8443:443", "127.0.0.1::81",'
        " {target: 82, published: 8082}]\n"
    )
    specs = [p.spec() for p in app.main.ports]
    assert specs == [
        "127.0.0.1::80/tcp",
        "127.0.0.1:8080:80/tcp",
        "0.0.0.0:9000:9000/udp",
        "[::1]:8443:443/tcp",
        "127.0.0.1::81/tcp",
        "127.0.0.1:8082:82/tcp",
    ]
    assert [p.public for p in app.main.ports] == [False, False, True, False, False, False]


def test_a_read_only_bind_of_an_ordinary_folder_is_allowed() -> None:
    app = parse(MINIMAL.format(name="b") + '    volumes: ["/srv/media:/media:ro", "data:/data"]\n')
    assert [(v.source, v.target, v.read_only, v.bind) for v in app.main.volumes] == [
        ("/srv/media", "/media", True, True),
        ("data", "/data", False, False),
    ]
    assert app.volume_names() == ("data",)
    assert app.backup.volumes == ("data",)


@pytest.mark.parametrize(
    "bind",
    [
        "/run/docker.sock:/s:ro",
        "/var/run:/r:ro",
        "/proc:/p:ro",
        "/var/lib/docker:/d:ro",
        "/srv/../etc:/e:ro",
        "/home/me/podman.sock:/s:ro",
    ],
)
def test_dangerous_binds_are_refused(bind: str) -> None:
    lines = problems_of(MINIMAL.format(name="b") + f'    volumes: ["{bind}"]\n')
    assert len(lines) == 1, lines
    assert lines[0].startswith("<test>: app b: services.web.volumes[0]: ")
    assert "is refused" in lines[0] or "must be absolute and normalised" in lines[0]


def test_healthcheck_string_becomes_cmd_shell_and_durations_parse() -> None:
    app = parse(
        MINIMAL.format(name="h") + "    healthcheck: {test: 'wget -q -O- localhost | grep ok', interval: 1m30s,"
        " timeout: 5s, retries: 2, start_period: 0s}\n"
    )
    check = app.main.healthcheck
    assert check is not None
    assert check.test == ("CMD-SHELL", "wget -q -O- localhost | grep ok")
    assert (check.interval, check.timeout, check.retries, check.start_period) == (90, 5, 2, 0)


def test_command_string_is_split_like_a_shell() -> None:
    app = parse(MINIMAL.format(name="c") + "    command: nginx -g 'daemon off;'\n")
    assert app.main.command == ("nginx", "-g", "daemon off;")


def test_capabilities_are_normalised_and_docker_defaults_may_be_added_back() -> None:
    app = parse(MINIMAL.format(name="c") + "    cap_drop: [all]\n    cap_add: [cap_chown, NET_BIND_SERVICE]\n")
    assert app.main.cap_drop == ("ALL",)
    assert app.main.cap_add == ("CHOWN", "NET_BIND_SERVICE")


def test_digest_pinned_image_needs_manual_upgrades() -> None:
    digest = "sha256:" + "a" * 64
    text = MINIMAL.format(name="d").replace("nginx:1.27.3", f"nginx@{digest}")
    assert problems_of(text) == [
        "<test>: app d: services.web.upgrade.policy: an image pinned by digest only has no tags to compare; "
        "use policy: manual"
    ]
    app = parse(text + "    upgrade: {policy: manual}\n")
    assert app.main.upgrade == UpgradeRule(policy="manual", tags=None)


def test_image_references_are_parsed_and_normalised() -> None:
    ref = parse_image("postgres:17.6-alpine")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("docker.io", "library/postgres", "17.6-alpine", None)
    ref = parse_image("ghcr.io/processone/ejabberd:26.04")
    assert (ref.registry, ref.repository, ref.tag) == ("ghcr.io", "processone/ejabberd", "26.04")
    ref = parse_image("127.0.0.1:5000/hp-test/app:1.0.0")
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "hp-test/app", "1.0.0")
    ref = parse_image("hp-test/busybox:1")
    assert (ref.registry, ref.repository) == ("docker.io", "hp-test/busybox")
    for bad in ("Nginx:1", "nginx:", "nginx@sha256:abc", "nginx:1 2", "-x/y:1", "a" * 256 + ":1"):
        with pytest.raises(ValueError):
            parse_image(bad)


def test_upgrade_rule_orders_versions_by_their_numbers() -> None:
    rule = UpgradeRule(tags=r"^17\.(\d+)-alpine$")
    assert rule.is_newer("17.10-alpine", "17.6-alpine")
    assert not rule.is_newer("18.0-alpine", "17.6-alpine")
    assert not rule.is_newer("17.6", "17.5-alpine")
    assert rule.newest(["17.7-alpine", "17.10-alpine", "18.1-alpine", "latest"], "17.6-alpine") == "17.10-alpine"
    assert rule.newest(["17.5-alpine"], "17.6-alpine") is None
    assert derive_tag_pattern("1.24.7-rootless") == r"^(\d+)\.(\d+)\.(\d+)\-rootless$"
    assert derive_tag_pattern("stable") is None
    derived = UpgradeRule(tags=derive_tag_pattern("1.24.7-rootless"))
    assert derived.newest(["1.24.10-rootless", "1.25.0", "2.0.0-rootless"], "1.24.7-rootless") == "2.0.0-rootless"


def test_app_level_policy_is_the_default_for_services() -> None:
    app = parse(MINIMAL.format(name="u") + "upgrade: {policy: auto}\n")
    assert app.main.upgrade.policy == "auto"
    assert app.main.upgrade.tags == r"^(\d+)\.(\d+)\.(\d+)$"
    lines = problems_of(MINIMAL.format(name="u") + "upgrade: {policy: auto, tags: '^1$'}\n")
    assert lines == ["<test>: app u: upgrade.tags: tags belong in a service's upgrade block: they describe one image"]


def test_backup_and_alerts_blocks() -> None:
    app = read_app(TEST_CATALOG / "pair.yaml")
    assert app.backup.volumes == ("data",) and app.backup.stop is False
    assert app.backup.pre is not None and app.backup.pre.service == "client"
    assert app.alerts is not None
    assert (app.alerts.cpu_percent, app.alerts.memory_percent, app.alerts.duration) == (None, 95, 30)
    default = read_app(TEST_CATALOG / "solo.yaml")
    assert default.backup.volumes == ("data",) and default.backup.stop is True and default.alerts is None


# --------------------------------------------------------------------------
# Settings


def setting(kind: str = "string", **extra: object) -> Setting:
    return Setting(name="value", prompt="?", type=kind, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "raw", "value"),
    [
        ("string", "  hello world ", "hello world"),
        ("string", "", ""),
        ("int", "-12", -12),
        ("bool", "Yes", True),
        ("bool", "false", False),
        ("port", "65535", 65535),
        ("domain", "Blog.Example.ORG.", "blog.example.org"),
        ("email", "me+tag@example.org", "me+tag@example.org"),
    ],
)
def test_setting_values_are_typed(kind: str, raw: str, value: object) -> None:
    assert validate_setting(setting(kind), raw) == value


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        ("int", "12a", "'12a' is not a whole number"),
        ("bool", "maybe", "'maybe': answer yes or no"),
        ("port", "0", "'0' is not a port number (1-65535)"),
        ("port", "65536", "'65536' is not a port number (1-65535)"),
        ("domain", "localhost", "'localhost' is not a domain name"),
        ("domain", "10.0.0.1", "'10.0.0.1' is not a domain name"),
        ("domain", "-bad.example.org", "is not a domain name"),
        ("email", "me@", "'me@' is not an email address"),
        ("email", "me@@example.org", "is not an email address"),
        ("int", "", "a value is needed"),
        ("string", "two\nlines", "control characters"),
    ],
)
def test_bad_setting_values_say_why(kind: str, raw: str, reason: str) -> None:
    with pytest.raises(SettingError) as raised:
        validate_setting(setting(kind), raw)
    assert reason in raised.value.reason
    assert str(raised.value).startswith("value: ")


def test_pattern_applies_and_a_secret_is_never_repeated() -> None:
    assert validate_setting(setting(pattern="^[a-z]+$"), "abc") == "abc"
    with pytest.raises(SettingError, match=r"must match \^\[a-z\]\+\$"):
        validate_setting(setting(pattern="^[a-z]+$"), "ABC")
    with pytest.raises(SettingError) as raised:
        validate_setting(setting("int", secret="ask"), "hunter2")
    assert "hunter2" not in str(raised.value)


def test_generated_secrets_are_long_random_and_url_safe() -> None:
    made = {generate_secret() for _ in range(50)}
    assert len(made) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", s) for s in made)


def test_resolve_values_asks_defaults_and_generates() -> None:
    app = read_app(TEST_CATALOG / "pair.yaml")
    assert [s.name for s in missing_settings(app, {})] == ["greeting"]
    assert missing_settings(app, {"greeting": "hi"}) == []
    values = resolve_values(app, {"greeting": "hello"})
    assert values["greeting"] == "hello" and values["answer"] == 42
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", str(values["token"]))
    # Values kept in an install record come back as they were.
    assert resolve_values(app, values) == values
    with pytest.raises(SettingError, match="pair has no such setting"):
        resolve_values(app, {"greeting": "hi", "colour": "red"})
    with pytest.raises(SettingError, match="no value given and no default"):
        resolve_values(app, {})
    with pytest.raises(SettingError, match=r"must match"):
        resolve_values(app, {"greeting": "Hello!"})


def test_render_substitutes_everywhere_placeholders_are_allowed() -> None:
    app = read_app(TEST_CATALOG / "pair.yaml")
    rendered = render(app, {"greeting": "hello", "answer": 7, "token": "s3cret"})
    web, client = rendered.service("web"), rendered.service("client")
    assert dict(web.environment) == {"GREETING": "hello", "TOKEN": "s3cret"}
    assert dict(web.labels) == {"org.example.greeting": "hello"}
    assert dict(client.environment) == {"ANSWER": "7"}
    assert rendered.notes == "The web server greets with hello on a port Docker picked on 127.0.0.1."
    # the original is untouched (frozen), settings still describe the app
    assert app.service("web").environment["GREETING"] == "{{ greeting }}"
    assert rendered.settings == app.settings
    with pytest.raises(SettingError, match="token: no value"):
        render(app, {"greeting": "hello", "answer": 7})


def test_render_keeps_a_value_with_spaces_as_one_argument() -> None:
    app = parse(
        """\
name: words
description: Words
settings:
  - {name: title, prompt: "Title?"}
  - {name: debug, prompt: "Debug?", type: bool, default: false}
services:
  web:
    image: nginx:1.27.3
    limits: {memory: 64m}
    command: run --title {{ title }} --debug={{debug}}
    healthcheck: {test: [CMD, check, "{{ title }}"]}
"""
    )
    rendered = render(app, resolve_values(app, {"title": "My Blog; rm -rf /"}))
    assert rendered.main.command == ("run", "--title", "My Blog; rm -rf /", "--debug=false")
    assert rendered.main.healthcheck is not None
    assert rendered.main.healthcheck.test == ("CMD", "check", "My Blog; rm -rf /")


# --------------------------------------------------------------------------
# JSON round trip (the install record keeps the entry as used)


ALL_APP_FILES = SHIPPED_FILES + sorted(TEST_CATALOG.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL_APP_FILES, ids=lambda p: p.name)
def test_app_round_trips_through_json(path: Path) -> None:
    app = read_app(path)
    data = json.loads(json.dumps(app.to_dict()))
    again = App.from_dict(data)
    assert again == app
    assert again.to_dict() == app.to_dict()


def test_from_dict_validates_like_a_file() -> None:
    data = read_app(TEST_CATALOG / "solo.yaml").to_dict()
    data["services"]["sleeper"]["privileged"] = True
    with pytest.raises(CatalogError, match=r"^<record>: app solo: services.sleeper.privileged: privileged"):
        App.from_dict(data)


def test_the_readme_example_is_a_valid_app() -> None:
    readme = (SHIPPED / "README.md").read_text()
    example = readme.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    app = parse(example)
    assert app.name == "notes"
    assert [s.name for s in app.start_order()] == ["db", "app"]
    assert app.service("app").limits.memory == 256 * 1024**2 and app.service("app").limits.cpus == 1.0
    assert [s.name for s in missing_settings(app, {})] == ["domain", "admin_email"]
