"""syncd as a real process: `python -m syncd run` on a config the test writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.eventually import until
from tests.mosquitto import free_port
from tests.postgres import new_database, on_postgres

RULES = Path(__file__).resolve().parent.parent / "rules" / "default.toml"


def write_config(
    workdir: Path,
    broker_port: int,
    tenants: dict[str, Path] | None = None,
    database: str | None = None,
    **extra: str,
) -> Path:
    """syncd.toml in `workdir`.

    `database`: "sqlite", "postgresql" (a new database) or a postgresql:// URL (that
    one); by default the run's (`SYNCD_TEST_STORE`).
    """
    http_port = free_port()
    tenants = tenants or {"acme": RULES}
    lines = [
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{broker_port}"',
        f'client_id = "syncd-{workdir.name}"',
        'topic_prefix = "syncd"',
        extra.get("mqtt", ""),
        "[http]",
        f'listen = "127.0.0.1:{http_port}"',
        f'public_url = "http://127.0.0.1:{http_port}"',
        "[store]",
        f'url = "{_store_url(workdir, database)}"',
        extra.get("store", ""),
        "[log]",
        'format = "json"',
        "[shutdown]",
        "drain_seconds = 5",
    ]
    if "qbo_base_url" in extra:
        lines += [
            "[qbo]",
            'environment = "sandbox"',
            f'base_url = "{extra["qbo_base_url"]}"',
            extra.get("qbo", ""),
        ]
    for tenant, rules in tenants.items():
        lines += ["[[tenants]]", f'id = "{tenant}"', f'rules = "{rules}"']
    path = workdir / "syncd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _store_url(workdir: Path, database: str | None) -> str:
    """SQLite in the workdir; a new PostgreSQL database when the run asks for one.

    A test reads either through `tests.dbview.DbView(workdir / "syncd.db")`: the
    database's URL is left beside it in `store.url`.
    """
    database = database or ("postgresql" if on_postgres() else "sqlite")
    if database == "sqlite":
        return f"sqlite:///{workdir}/syncd.db"
    url = database if database.startswith("postgresql://") else new_database()
    (workdir / "store.url").write_text(url)
    return url


class SyncdProcess:
    """Start, stop, kill and restart one syncd."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config.parent / "syncd.log"
        text = config.read_text()
        self.http_port = int(text.split('listen = "127.0.0.1:')[1].split('"')[0])

    def start(self, wait_ready: bool = True) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        if wait_ready:
            self.wait_ready()

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 20) -> None:
        try:
            until(self._ready, timeout=timeout)
        except AssertionError:
            raise RuntimeError(f"syncd not ready: {self.log()}") from None

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"syncd exited {code}: {self.log()}")
        return self.get("/readyz")[0] == 200

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )


ADMIN = "admin-token-for-tests"
QBO_ENV = {
    "SYNCD_QBO_CLIENT_ID": "test-client",
    "SYNCD_QBO_CLIENT_SECRET": "test-secret",
    "SYNCD_QBO_VERIFIER_TOKEN": "test-verifier",
    "SYNCD_SECRET_KEY": "9NJgLNRlbDDB6IqH-EdCEssmMUdKBIpBJqgqktEXT4g=",
    "SYNCD_ADMIN_TOKEN": ADMIN,
}
