"""`homeport demo`: the newcomer's first taste, on one machine, offline.

It starts a throwaway Prosody with TLS from a CA it generates, creates a bot
account and an owner account, makes sure a sample app runs (a busybox web
server imported from Debian's busybox-static, so no container registry is
needed), starts `homeport run` against all of that, and opens `homeport
chat` as the owner in this terminal. Leaving the chat stops the bot and the
Prosody; the sample app and the state stay for the next run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bot.engine import APP_LABEL, SERVICE_LABEL, Engine
from bot.errors import EngineError

log = logging.getLogger(__name__)

DEMO_IMAGE = "homeport-demo/busybox:1"
DEMO_APP = "hello"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
ONLINE_TIMEOUT_S = 30.0


def _password(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _rootfs_tar(dest: Path) -> None:
    """A root filesystem with busybox and its applet links."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        (root / "www").mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        for applet in ("sh", "httpd", "sleep", "echo", "cat", "ls", "wget", "date"):
            os.symlink("busybox", root / "bin" / applet)
        (root / "www" / "index.html").write_text("<h1>Hello from homeport's demo app</h1>\n")
        with tarfile.open(dest, "w") as tar:
            tar.add(root, arcname=".")


async def ensure_sample_app(engine: Engine) -> str:
    """Make sure the demo app exists; returns a line saying what was done."""
    try:
        if await engine.containers(DEMO_APP):
            return f"sample app '{DEMO_APP}' already there"
    except EngineError as exc:
        return f"Docker: {exc}"
    if await engine.local_image(DEMO_IMAGE) is None:
        if not BUSYBOX.exists():
            return f"no sample app: {BUSYBOX} is missing (apt-get install busybox-static)"
        with tempfile.TemporaryDirectory() as tmp:
            tar = Path(tmp) / "rootfs.tar"
            _rootfs_tar(tar)
            await engine.import_image(str(tar), DEMO_IMAGE, ['CMD ["/bin/sh"]'])
    name = f"{DEMO_APP}-web"
    cid = await engine.create_container(name, {
        "Image": DEMO_IMAGE,
        "Cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"],
        "Labels": {APP_LABEL: DEMO_APP, SERVICE_LABEL: "web"},
        "ExposedPorts": {"8080/tcp": {}},
        "HostConfig": {
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
            "RestartPolicy": {"Name": "unless-stopped"},
            "SecurityOpt": ["no-new-privileges:true"],
        },
    })
    await engine.start_container(cid, name)
    return f"sample app '{DEMO_APP}' created: http://127.0.0.1:8080/"


def write_config(root: Path, port: int, ca_file: Path) -> Path:
    config = root / "config.yaml"
    config.write_text(
        "# Written by `homeport demo`: a local sandbox, not a real server's config.\n"
        "xmpp:\n"
        "  jid: bot@localhost\n"
        f"  password_file: {root / 'bot.password'}\n"
        "  host: 127.0.0.1\n"
        f"  port: {port}\n"
        f"  ca_file: {ca_file}\n"
        "owners: [owner@localhost]\n"
        f"state_dir: {root / 'state'}\n"
    )
    os.chmod(config, 0o600)
    return config


def _wait_online(log_file: Path, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if log_file.exists() and "xmpp: online as" in log_file.read_text(errors="replace"):
            return True
        time.sleep(0.1)  # polling a condition with a deadline
    return False


def run_demo(root: Path, keep_running: bool = False) -> int:
    from bot.chat import run_chat
    from bot.sandbox import ProsodySandbox, SandboxError

    # The prosody user must reach the sandbox; a world-traversable root.
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    prosody_dir = root / "prosody"
    shutil.rmtree(prosody_dir, ignore_errors=True)  # throwaway: a fresh server each run
    sandbox = ProsodySandbox(prosody_dir)
    bot_pw = _password(root / "bot.password")
    owner_pw = _password(root / "owner.password")
    try:
        sandbox.register("bot", bot_pw)
        sandbox.register("owner", owner_pw)
        sandbox.start()
    except SandboxError as exc:
        print(f"homeport demo: {exc}", file=sys.stderr)
        return 1
    print(f"Prosody sandbox on 127.0.0.1:{sandbox.port} (domain localhost, CA {sandbox.ca_file})")
    print(asyncio.run(ensure_sample_app(Engine())))
    config = write_config(root, sandbox.port, sandbox.ca_file)
    log_file = root / "bot.log"
    with open(log_file, "ab") as logf:
        bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(config)],
                               stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    try:
        if not _wait_online(log_file, bot, ONLINE_TIMEOUT_S):
            print(f"homeport demo: the bot did not come online; see {log_file}", file=sys.stderr)
            return 1
        print(f"Bot online as bot@localhost (log: {log_file}).")
        if keep_running:
            print(f"Chat with: homeport chat --jid owner@localhost --password-file {root / 'owner.password'} "
                  f"--to bot@localhost --host 127.0.0.1 --port {sandbox.port} --ca-file {sandbox.ca_file}")
            print("Ctrl-C stops the demo.")
            try:
                bot.wait()
            except KeyboardInterrupt:
                pass
            return 0
        print("You are owner@localhost. Try: help, status, logs hello, restart hello. Ctrl-D leaves.")
        return asyncio.run(run_chat("owner@localhost", owner_pw, "bot@localhost", "127.0.0.1",
                                    sandbox.port, sandbox.ca_file))
    finally:
        if bot.poll() is None:
            bot.send_signal(signal.SIGTERM)
            try:
                bot.wait(timeout=30)
            except subprocess.TimeoutExpired:
                bot.kill()
        sandbox.stop()
