"""Mosquitto, the QBO sandbox and syncd as processes on free loopback ports, connected."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
from cryptography.fernet import Fernet

RULES = Path(__file__).resolve().parent.parent.parent / "rules" / "default.toml"
CLIENT_ID, CLIENT_SECRET, VERIFIER = "demo-client", "demo-secret", "demo-verifier"


class DemoError(Exception):
    """Something the demo needs is missing or did not start; the message says what."""


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    """Mosquitto's path, or DemoError saying how to install it."""
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise DemoError("Mosquitto is not installed: apt-get install -y mosquitto")
    return found


@dataclass
class Services:
    """The three processes of the demo and what connects them."""

    workdir: Path
    tenants: dict[str, Path]
    broker_port: int = field(default_factory=free_port)
    sandbox_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    realms: dict[str, str] = field(default_factory=dict)  # tenant → its QBO company
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def syncd_url(self) -> str:
        """The HTTP origin of syncd (admin API, OAuth, webhooks)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sandbox_url(self) -> str:
        """The sandbox's origin (QBO's API and Intuit's OAuth)."""
        return f"http://127.0.0.1:{self.sandbox_port}"

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Start the broker, the sandbox and syncd; connect every tenant to QBO."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_broker()
        self._spawn(
            "sandbox",
            [
                "sandbox",
                "--port",
                str(self.sandbox_port),
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
                "--verifier-token",
                VERIFIER,
                "--webhook-url",
                f"{self.syncd_url}/webhooks/qbo",
                "--webhook-delay",
                "0.1",
                # the person at the books and syncd share one company: no per-second
                # cap, or a 429 would hold the demo for QBO's minute-long pause
                "--per-second",
                "0",
            ],
        )
        await _until_answers(
            http, f"{self.sandbox_url}/.well-known/openid_configuration"
        )
        self._spawn("syncd", ["run", "--config", str(self._write_config())])
        await _until_answers(http, f"{self.syncd_url}/readyz")
        for tenant in self.tenants:
            self.realms[tenant] = await self._connect(http, tenant)

    def stop(self) -> None:
        """Stop syncd, then the sandbox, then the broker."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._procs.clear()

    def env(self) -> dict[str, str]:
        """The secrets syncd reads from its environment."""
        return {
            "SYNCD_QBO_CLIENT_ID": CLIENT_ID,
            "SYNCD_QBO_CLIENT_SECRET": CLIENT_SECRET,
            "SYNCD_QBO_VERIFIER_TOKEN": VERIFIER,
            "SYNCD_SECRET_KEY": Fernet.generate_key().decode(),
            "SYNCD_ADMIN_TOKEN": self.admin_token,
        }

    def _start_broker(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.broker_port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        log = (self.workdir / "mosquitto.out").open("ab")
        self._procs.append(
            subprocess.Popen(  # noqa: S603 -- our own config, a fixed binary
                [mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log
            )
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.broker_port)) == 0:
                    return
            time.sleep(0.05)
        raise DemoError(f"Mosquitto did not start: see {self.workdir}/mosquitto.log")

    def _spawn(self, name: str, args: list[str]) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self._procs.append(
            subprocess.Popen(  # noqa: S603 -- this Python running syncd itself
                [sys.executable, "-m", "syncd", *args],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env()},
            )
        )

    def _write_config(self) -> Path:
        lines = [
            "[mqtt]",
            f'url = "mqtt://127.0.0.1:{self.broker_port}"',
            'client_id = "syncd-demo"',
            'topic_prefix = "syncd"',
            "[http]",
            f'listen = "127.0.0.1:{self.http_port}"',
            f'public_url = "{self.syncd_url}"',
            "[store]",
            f'url = "sqlite:///{self.workdir}/syncd.db"',
            "[log]",
            'format = "json"',
            "[qbo]",
            'environment = "sandbox"',
            f'base_url = "{self.sandbox_url}"',
        ]
        for tenant, rules in self.tenants.items():
            lines += ["[[tenants]]", f'id = "{tenant}"', f'rules = "{rules}"']
        path = self.workdir / "syncd.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def _connect(self, http: aiohttp.ClientSession, tenant: str) -> str:
        """The admin's OAuth walk, done for them: syncd → consent → syncd's callback."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        url = f"{self.syncd_url}/oauth/connect?tenant={tenant}"
        async with http.get(url, headers=headers, allow_redirects=False) as r:
            consent = r.headers.get("Location", "")
        async with http.get(consent, allow_redirects=False) as r:
            callback = r.headers.get("Location", "")
        if urlparse(callback).path != "/oauth/callback":
            raise DemoError(f"the sandbox did not send the consent back: {callback!r}")
        async with http.get(callback) as r:
            body = await r.json()
            if r.status != 200:
                raise DemoError(f"connecting {tenant} to QBO failed: {body}")
        return str(body["realm_id"])


async def _until_answers(http: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise DemoError(
        f"{url} did not answer within 30 s (see the logs in the work folder)"
    )
