"""Everything the sandbox holds: companies, the app's OAuth, limits, webhooks, faults."""

from __future__ import annotations

import contextlib
import pickle
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncd.sandbox.company import Company
from syncd.sandbox.oauth import OAuthServer
from syncd.sandbox.throttle import Limits, Throttle
from syncd.sandbox.webhooks import Notifier


@dataclass
class ApiFaults:
    """Rates (0..1) of injected API faults; `seed` makes a run repeatable."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 5.0
    # the write is committed, then the answer is held back (the client times out)
    slow_after_commit: float = 0.0


@dataclass
class SandboxConfig:
    """How `syncd sandbox` was started."""

    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"  # noqa: S105 -- a sandbox default, not a secret
    verifier_token: str = "sandbox-verifier"  # noqa: S105 -- likewise
    webhook_url: str | None = None
    webhook_format: str = "cloudevents"
    webhook_delay: float = 0.2
    access_ttl: int = 3600
    hard_days: float = 5 * 365  # a grant's hard maximum (qbo.md §8), days
    time_scale: float = 1.0
    state_file: Path | None = None
    limits: Limits = field(default_factory=Limits)


class Sandbox:
    """The sandbox's state, shared by the API, OAuth and admin routes."""

    def __init__(self, config: SandboxConfig) -> None:
        config.limits.time_scale = config.time_scale
        self.config = config
        self.oauth = OAuthServer(
            config.client_id, config.client_secret, config.access_ttl, config.hard_days
        )
        self.throttle = Throttle(config.limits)
        self.notifier = Notifier(
            config.webhook_url,
            config.verifier_token,
            config.webhook_format,
            config.webhook_delay,
            config.time_scale,
        )
        self.companies: dict[str, Company] = {}
        self.faults = ApiFaults()
        self.rng = random.Random(0)  # noqa: S311 -- fault rolls, not secrets
        self.requests: list[dict[str, Any]] = []
        self._next_realm = 9130350000000001
        self.load()

    def new_company(self, realm_id: str | None = None) -> Company:
        """A fresh company, like a new QBO sandbox company."""
        if realm_id is None:
            realm_id = str(self._next_realm)
            self._next_realm += 1
        company = Company(realm_id, self.notifier.notify)
        self.companies[realm_id] = company
        return company

    def seed(self, seed: int) -> None:
        """Make fault rolls repeatable."""
        self.rng.seed(seed)
        self.notifier.rng.seed(seed)

    def log(self, entry: dict[str, Any]) -> None:
        """Remember a request for the admin API (the last 10,000)."""
        entry["at"] = time.time()
        self.requests.append(entry)
        if len(self.requests) > 10_000:
            del self.requests[:1000]

    def save(self) -> None:
        """Write companies and tokens to the SQLite state file, if one is set."""
        path = self.config.state_file
        if path is None:
            return
        listeners = {r: c.listener for r, c in self.companies.items()}
        for company in self.companies.values():
            company.listener = None  # the notifier is not state
        try:
            oauth = {
                k: getattr(self.oauth, k)
                for k in ("codes", "grants", "superseded", "access")
            }
            rows = [
                (f"company:{r}", pickle.dumps(c)) for r, c in self.companies.items()
            ]
            rows += [
                ("oauth", pickle.dumps(oauth)),
                ("next_realm", pickle.dumps(self._next_realm)),
            ]
        finally:
            for realm, company in self.companies.items():
                company.listener = listeners[realm]
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB)"
            )
            db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", rows)

    def load(self) -> None:
        """Read the SQLite state file, if one is set and exists."""
        path = self.config.state_file
        if path is None or not path.exists():
            return
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = dict(db.execute("SELECT key, value FROM state").fetchall())
        for key, blob in rows.items():
            value = pickle.loads(blob)  # noqa: S301 -- the sandbox's own file
            if key.startswith("company:"):
                value.listener = self.notifier.notify
                self.companies[value.realm_id] = value
            elif key == "oauth":
                self.oauth.__dict__.update(value)
            elif key == "next_realm":
                self._next_realm = value
