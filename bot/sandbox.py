"""A throwaway local Prosody for the quick start and the tests.

`ProsodySandbox` generates its own certificate authority and a server
certificate for its domain (openssl), writes a Prosody config that listens
for clients on 127.0.0.1 only with TLS required, and runs Prosody in the
foreground as the `prosody` user (Prosody refuses to run as root). Clients
trust the generated CA through `ca_file`, so certificate verification stays
on everywhere.

Everything lives under one root folder: certificates, config, data, log.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROSODY_USER = "prosody"
START_TIMEOUT = 20.0  # seconds for Prosody to accept connections
STOP_TIMEOUT = 10.0


class SandboxError(RuntimeError):
    """The sandbox could not be set up or started; the message says why."""


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA made with openssl: signs server certificates for the sandbox and tests."""

    cert: Path
    key: Path

    @classmethod
    def create(cls, folder: Path, name: str = "homeport sandbox CA") -> "CertificateAuthority":
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "ca.pem", folder / "ca.key"
        _openssl(
            "req", "-x509", "-new", "-nodes",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert), "-days", "3650",
            "-subj", f"/CN={name}",
            # Explicit CA extensions: strict verifiers (Python 3.13's
            # VERIFY_X509_STRICT) reject a CA without keyUsage.
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
        )
        return cls(cert=cert, key=key)

    def issue(self, hostname: str, folder: Path) -> tuple[Path, Path]:
        """A server certificate for `hostname` (in the SAN), signed by this CA.

        Returns (certificate, key) paths.
        """
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / f"{hostname}.crt", folder / f"{hostname}.key"
        csr, ext = folder / f"{hostname}.csr", folder / f"{hostname}.ext"
        _openssl(
            "req", "-new", "-nodes",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hostname}",
        )
        # Hostname checks look at the SAN only; the CN is for humans.
        ext.write_text(
            f"subjectAltName=DNS:{hostname}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-out", str(cert), "-days", "825", "-extfile", str(ext),
        )
        csr.unlink()
        ext.unlink()
        return cert, key


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    """Direct child pids of `pid` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _lua_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class ProsodySandbox:
    """One Prosody process on 127.0.0.1 with TLS from its own CA.

    `start()` is idempotent about setup: the CA, the certificate and the
    accounts survive `stop()`/`restart()`, so clients keep trusting it.
    """

    host = "127.0.0.1"

    def __init__(self, root: Path, domain: str = "localhost", port: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.domain = domain
        self.port = port if port is not None else free_port(self.host)
        self.config_file = self.root / "prosody.cfg.lua"
        self.data_dir = self.root / "data"
        self.log_file = self.root / "prosody.log"
        self.ca_file = self.root / "certs" / "ca.pem"
        # The CA's key stays in the sandbox too, so tests can issue more
        # certificates from the same trusted CA (e.g. for a wrong hostname).
        self.ca = CertificateAuthority(cert=self.ca_file, key=self.root / "certs" / "ca.key")
        self._proc: subprocess.Popen[bytes] | None = None

    # -- setup ---------------------------------------------------------------

    def _prepare(self) -> None:
        """Create what is missing (CA, certificate) and write the config.

        The config is rewritten every time: a sandbox reopened on an existing
        root may have been given another port. The CA is kept, so clients
        that trust it keep working across runs.
        """
        if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
            raise SandboxError("prosody is not installed (Debian: apt-get install prosody)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_reachable_by_prosody()
        certs = self.root / "certs"
        if not (self.ca.cert.exists() and self.ca.key.exists()):
            CertificateAuthority.create(certs)
        cert, key = certs / f"{self.domain}.crt", certs / f"{self.domain}.key"
        if not (cert.exists() and key.exists()):
            self.ca.issue(self.domain, certs)
        self.data_dir.mkdir(exist_ok=True)
        text = self._config_text(cert, key)
        if not self.config_file.exists() or self.config_file.read_text() != text:
            self.config_file.write_text(text)
            log.info("prosody sandbox config written in %s for %s on port %d",
                     self.root, self.domain, self.port)
        self._chown_tree()

    def _config_text(self, cert: Path, key: Path) -> str:
        q = _lua_string
        return f"""-- Generated by homeport's ProsodySandbox: a throwaway local server.
data_path = {q(str(self.data_dir))}
pidfile = {q(str(self.root / "prosody.pid"))}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = {q(str(self.log_file))} }} }}

-- Clients only, on loopback only. No server-to-server, no HTTP.
interfaces = {{ {q(self.host)} }}
c2s_interfaces = {{ {q(self.host)} }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
s2s_interfaces = {{ }}
http_ports = {{ }}
https_ports = {{ }}

c2s_require_encryption = true
authentication = "internal_hashed"
allow_registration = false
storage = "internal"

-- Runs in the foreground under a supervisor (pytest, `homeport run`):
-- posix would try to daemonize and manage a pid file.
modules_enabled = {{
    "roster"; "saslauth"; "tls"; "disco"; "carbons"; "ping"; "presence";
    "offline";
}}
modules_disabled = {{ "s2s"; "posix"; }}

VirtualHost {q(self.domain)}
    ssl = {{ key = {q(str(key))}; certificate = {q(str(cert))} }}
"""

    def _check_reachable_by_prosody(self) -> None:
        # The prosody user must traverse every ancestor of the root; pytest's
        # and mkdtemp's folders are 0700 root-only, which makes Prosody fail
        # with a confusing "cannot read config".
        for parent in reversed(self.root.parents):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                raise SandboxError(
                    f"{parent} is not traversable by the {PROSODY_USER} user; "
                    "put the sandbox under a world-traversable folder such as /tmp"
                )

    def _chown_tree(self) -> None:
        # Only what we create; Prosody's own data files are its already, and
        # walking them would race its atomic file replacements.
        pw = pwd.getpwnam(PROSODY_USER)
        certs = self.root / "certs"
        paths = [self.root, self.config_file, self.data_dir, certs, *certs.iterdir()]
        for path in paths:
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # -- process -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._prepare()
        if port_accepts(self.host, self.port, timeout=0.2):
            raise SandboxError(f"port {self.port} on {self.host} is already in use")
        # The console output is small (Prosody logs to its file); keep it for
        # error messages instead of a pipe nobody drains.
        console = open(self.root / "console.out", "ab")
        try:
            self._proc = subprocess.Popen(
                ["runuser", "-u", PROSODY_USER, "--",
                 "prosody", "--config", str(self.config_file), "-F"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                cwd=self.root, start_new_session=True,
            )
        finally:
            console.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SandboxError(f"prosody exited with {self._proc.returncode}: {self._tail()}")
            if port_accepts(self.host, self.port):
                log.info("prosody sandbox up: %s on %s:%d (pid %d)",
                         self.domain, self.host, self.port, self._proc.pid)
                return
            time.sleep(0.05)  # polling a condition with a deadline, not hoping
        self.stop()
        raise SandboxError(f"prosody did not accept connections within {START_TIMEOUT:.0f} s: {self._tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # Signal Prosody itself: runuser, when signalled, waits a fixed 2 s
        # before it SIGKILLs its child, which slows every restart.
        children = _children(proc.pid)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if not children:
            proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("prosody did not stop within %.0f s, killing it", STOP_TIMEOUT)
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        # The listening socket goes away with the process; wait for it so a
        # restart does not race the old listener.
        deadline = time.monotonic() + STOP_TIMEOUT
        while port_accepts(self.host, self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)
        log.info("prosody sandbox stopped")

    def restart(self) -> None:
        self.stop()
        self.start()

    def _tail(self, lines: int = 15) -> str:
        parts = []
        for f in (self.root / "console.out", self.log_file):
            if f.exists():
                parts.extend(f.read_text(errors="replace").splitlines()[-lines:])
        return " | ".join(parts) or "(no output)"

    # -- accounts ------------------------------------------------------------

    def register(self, user: str, password: str) -> str:
        """Create (or reset the password of) an account; returns its bare JID.

        prosodyctl writes the account store directly, so this works whether
        or not Prosody is running; as root it switches to the prosody user.
        """
        self._prepare()
        proc = subprocess.run(
            ["prosodyctl", "--config", str(self.config_file), "register", user, self.domain, password],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise SandboxError(
                f"prosodyctl register {user}@{self.domain} failed: {(proc.stdout + proc.stderr).strip()}"
            )
        return f"{user}@{self.domain}"

    def __enter__(self) -> "ProsodySandbox":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
