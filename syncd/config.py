"""syncd.toml + SYNCD_* secrets from the environment → frozen Config."""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from syncd.const import DEFAULT_MAX_PAYLOAD_BYTES, TENANT_ID_RE
from syncd.exceptions import ConfigError
from syncd.rules.model import Rules, load_rules
from syncd.rules.tables import TableReader, read_toml

_SECTIONS = {"mqtt", "http", "store", "qbo", "log", "shutdown", "tenants"}
_MQTT_KEYS = {"url", "client_id", "topic_prefix", "session_expiry", "receive_maximum"}
_MQTT_KEYS |= {"keepalive", "max_payload_bytes", "ca_file", "shared_group"}
_MQTT_KEYS |= {"park_seconds"}
# a replica's name ends its MQTT client id and a status topic: letters, digits, - _ .
_REPLICA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


SECRET_NAMES = (
    "QBO_CLIENT_SECRET",
    "QBO_VERIFIER_TOKEN",
    "ADMIN_TOKEN",
    "SECRET_KEY",
    "MQTT_PASSWORD",
    "STORE_PASSWORD",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Secrets:
    """Secrets from the environment; never printed (repr hides them)."""

    values: Mapping[str, str] = field(default_factory=dict, repr=False)

    def get(self, name: str) -> str | None:
        """Return the secret `SYNCD_<name>` or None."""
        return self.values.get(f"SYNCD_{name}") or None

    def redactions(self) -> list[str]:
        """Every secret value, and the form it travels in (the Basic auth header)."""
        found = [v for name in SECRET_NAMES if (v := self.get(name))]
        client_id, secret = self.get("QBO_CLIENT_ID"), self.get("QBO_CLIENT_SECRET")
        if client_id and secret:
            found.append(base64.b64encode(f"{client_id}:{secret}".encode()).decode())
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    """The broker connection."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: Path | None = (
        None  # the CA that signed the broker's certificate (else the system's)
    )
    client_id: str = "syncd"
    # several replicas: each subscribes through `$share/<group>/…`; "" = one process
    shared_group: str = ""
    # with a shared group: how long a message may wait for its invoice's earlier ones
    park_seconds: int = 300
    topic_prefix: str = "syncd"
    session_expiry: int = 7 * 24 * 3600  # how long the broker queues for us while down
    receive_maximum: int = 1000  # un-acked window; Mosquitto uses 20 when unset
    keepalive: int = 30
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    """The HTTP listener."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    body_timeout: int = 10  # seconds for a request body to arrive in full
    # reverse proxies whose X-Forwarded-For names the client (the guard counts by it)
    trusted_proxies: tuple[str, ...] = ()
    metrics_token: bool = False  # /metrics wants the admin token (it names tenants)


@dataclass(frozen=True, slots=True, kw_only=True)
class QboConfig:
    """QuickBooks Online settings (used by the QBO sync)."""

    environment: str = "production"
    base_url: str = ""
    reconcile_interval: int = 300
    request_timeout: float = 30.0  # seconds for one QBO call
    throttle_pause: float = 60.0  # Intuit asks for a minute's pause after a 429
    # QBO minutes per real minute: only against `syncd sandbox --time-scale` (benchmarks)
    time_scale: float = 1.0
    # the app's monthly allowance of metered reads (qbo.md §10: 500,000 on Builder)
    monthly_reads_budget: int = 500_000
    # syncd's share of each company's quota (QBO: 500 requests, 40 of them batches, a
    # minute); lower them when other tools write to the same company
    requests_per_minute: int = 450
    batch_requests_per_minute: int = 38


@dataclass(frozen=True, slots=True, kw_only=True)
class Tenant:
    """One CRM company and its rules."""

    id: str
    rules_path: Path
    rules: Rules


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How long finished records are kept, in days (`[store] keep_*_days`)."""

    ledger_days: int = 8  # processed messages: dedupe needs the broker session's 7 days
    rejected_days: int = 30  # rejected and failed messages, with their payloads
    finished_days: int = 30  # finished jobs, resolved failures, applied webhooks


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything syncd runs with."""

    path: Path
    mqtt: MqttConfig
    http: HttpConfig
    store_path: Path
    store_check: str = "quick"  # at start: "quick" (SQLite's quick_check) or "schema"
    # a PostgreSQL database instead of the SQLite file (several replicas); "" for SQLite
    store_url: str = ""
    # how long a replica's lease on a realm (or on the leader's chores) lasts unrenewed
    lease_seconds: int = 30
    # this replica's name (SYNCD_REPLICA, else the host name); `replica_named`: it was set
    replica: str = "syncd"
    replica_named: bool = False
    retention: Retention = field(default_factory=Retention)
    qbo: QboConfig
    log_level: str = "info"
    log_format: str = "auto"
    drain_seconds: float = 10.0
    tenants: Mapping[str, Tenant]
    secrets: Secrets = field(default_factory=Secrets)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate syncd.toml and every rules file it names."""
    return parse_config(read_toml(path, str(path)), path, environ or {})


def parse_config(
    data: dict[str, Any], path: Path, environ: Mapping[str, str]
) -> Config:
    """Validate parsed syncd.toml; raise ConfigError listing every problem."""
    r = TableReader(str(path))
    r.table(data, "", _SECTIONS)
    log = r.sub(data, "", "log", {"level", "format"})
    shutdown = r.sub(data, "", "shutdown", {"drain_seconds"})
    store_path, store_check, store_url = _store(r, data, path.parent)
    keep: dict[str, Any] = s if isinstance(s := data.get("store"), dict) else {}
    config = Config(
        path=path,
        mqtt=_mqtt(r, data, path.parent),
        http=_http(r, data),
        store_path=store_path,
        store_check=store_check,
        store_url=store_url,
        lease_seconds=r.integer(keep, "store", "lease_seconds", 30, low=3, high=3600),
        replica=_replica(r, environ),
        replica_named=bool(environ.get("SYNCD_REPLICA")),
        retention=Retention(
            # a day of it allows for clocks (bus/envelope.check_timely): at least 2
            ledger_days=r.integer(keep, "store", "keep_ledger_days", 8, low=2),
            rejected_days=r.integer(keep, "store", "keep_rejected_days", 30, low=1),
            finished_days=r.integer(keep, "store", "keep_finished_days", 30, low=1),
        ),
        qbo=_qbo(r, data),
        log_level=r.text(log, "log", "level", "info", ("debug", "info", "warning")),
        log_format=r.text(log, "log", "format", "auto", ("auto", "json", "console")),
        drain_seconds=float(r.integer(shutdown, "shutdown", "drain_seconds", 10)),
        tenants=_tenants(r, data, path.parent),
        secrets=Secrets(
            values={k: v for k, v in environ.items() if k.startswith("SYNCD_")}
        ),
    )
    broker_user = config.secrets.get("MQTT_USERNAME")
    if broker_user and broker_user in config.tenants:
        r.problem(
            "tenants",
            f"tenant {broker_user!r} has the name of syncd's own broker user "
            "(SYNCD_MQTT_USERNAME): the broker's per-tenant ACL would give its CRM "
            "syncd's rights",
        )
    if r.problems:
        raise ConfigError(r.problems)
    return config


def _mqtt(r: TableReader, data: dict[str, Any], base: Path) -> MqttConfig:
    t = r.sub(data, "", "mqtt", _MQTT_KEYS)
    url = urlsplit(r.text(t, "mqtt", "url", "mqtt://127.0.0.1:1883"))
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        r.problem(
            "mqtt.url", 'must look like "mqtt://host:1883" or "mqtts://host:8883"'
        )
    if url.username is not None or url.password is not None:
        # syncd.toml holds no secret: they would be ignored, and lie around in the file
        r.problem(
            "mqtt.url",
            "must not hold a user or password: set SYNCD_MQTT_USERNAME and "
            "SYNCD_MQTT_PASSWORD in the environment",
        )
    ca_file = r.text(t, "mqtt", "ca_file", "")
    ca_path = (base / ca_file) if ca_file else None
    if ca_path is not None and not ca_path.is_file():
        r.problem("mqtt.ca_file", f"{ca_path}: no such file")
    prefix = r.text(t, "mqtt", "topic_prefix", "syncd")
    if (
        not prefix
        or any(c in prefix for c in "+#")
        or prefix.strip("/") != prefix
        or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in prefix)
    ):
        r.problem("mqtt.topic_prefix", f"{prefix!r} is not a usable topic prefix")
    group = r.text(t, "mqtt", "shared_group", "")
    if group and not _REPLICA_RE.match(group):
        r.problem("mqtt.shared_group", f"{group!r}: letters, digits, - _ . only")
    return MqttConfig(
        host=url.hostname or "127.0.0.1",
        port=_port(r, url, 8883 if url.scheme == "mqtts" else 1883),
        tls=url.scheme == "mqtts",
        ca_file=ca_path,
        client_id=r.text(t, "mqtt", "client_id", "syncd"),
        shared_group=group,
        park_seconds=r.integer(t, "mqtt", "park_seconds", 300, low=1, high=86400),
        topic_prefix=prefix,
        # MQTT's own ranges: a four-byte interval, two-byte maximum and keepalive
        session_expiry=r.integer(
            t, "mqtt", "session_expiry", 7 * 24 * 3600, low=1, high=2**32 - 1
        ),
        receive_maximum=r.integer(
            t, "mqtt", "receive_maximum", 1000, low=1, high=65535
        ),
        keepalive=r.integer(t, "mqtt", "keepalive", 30, low=5, high=65535),
        max_payload_bytes=r.integer(
            t, "mqtt", "max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES, low=1024
        ),
    )


def _replica(r: TableReader, environ: Mapping[str, str]) -> str:
    """This replica's name: SYNCD_REPLICA, else the host name."""
    name = environ.get("SYNCD_REPLICA") or socket.gethostname()
    if not _REPLICA_RE.match(name):
        if "SYNCD_REPLICA" in environ:
            r.problem("SYNCD_REPLICA", f"{name!r}: letters, digits, - _ . only")
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip("-.")[:63] or "syncd"
    return name


def _port(r: TableReader, url: Any, default: int) -> int:
    try:
        port = int(url.port if url.port is not None else default)
    except ValueError:
        r.problem("mqtt.url", "has a port that is not a number from 1 to 65535")
        return default
    if port == 0:
        r.problem("mqtt.url", "has port 0: no broker listens there")
        return default
    return port


_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|[0-9A-Fa-f:.]+)$")


def _web_url(r: TableReader, key: str, value: str) -> str:
    """An http(s) URL with a host, or "" (not set)."""
    if value and (
        urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname
    ):
        r.problem(key, f"{value[:80]!r} must be an http:// or https:// URL with a host")
        return ""
    return value


def _http(r: TableReader, data: dict[str, Any]) -> HttpConfig:
    t = r.sub(
        data,
        "",
        "http",
        {"listen", "public_url", "body_timeout", "trusted_proxies", "metrics_token"},
    )
    listen = r.text(t, "http", "listen", "127.0.0.1:8080")
    host, _, port = listen.rpartition(":")
    if (
        not _HOST_RE.match(host)
        or not (port.isascii() and port.isdigit())
        or not 0 < int(port) < 65536
    ):
        r.problem("http.listen", f'{listen!r} is not "host:port" (port 1 to 65535)')
        host, port = "127.0.0.1", "8080"
    return HttpConfig(
        host=host.strip("[]"),
        port=int(port),
        public_url=_web_url(r, "http.public_url", r.text(t, "http", "public_url", "")),
        body_timeout=r.integer(t, "http", "body_timeout", 10, low=1),
        trusted_proxies=_addresses(r, r.texts(t, "http", "trusted_proxies")),
        metrics_token=r.flag(t, "http", "metrics_token", False),
    )


def _addresses(r: TableReader, values: tuple[str, ...]) -> tuple[str, ...]:
    """IP addresses (of reverse proxies whose X-Forwarded-For syncd believes)."""
    for value in values:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            r.problem("http.trusted_proxies", f"{value!r} is not an IP address")
    return values


_STORE_KEYS = {
    "url",
    "check",
    "keep_ledger_days",
    "keep_rejected_days",
    "keep_finished_days",
    "lease_seconds",
}


def _store(r: TableReader, data: dict[str, Any], base: Path) -> tuple[Path, str, str]:
    """The SQLite file (its path), its start-up check, or a PostgreSQL URL."""
    t = r.sub(data, "", "store", _STORE_KEYS)
    check = r.text(
        t, "store", "check", "quick", ("quick", "at-start", "background", "schema")
    )
    url = r.text(t, "store", "url", "sqlite:syncd.db")
    scheme, _, rest = url.partition(":")
    if scheme in ("postgresql", "postgres"):
        where = urlsplit(url)
        if where.password is not None:
            r.problem(
                "store.url",
                "the password goes in SYNCD_STORE_PASSWORD, never in the URL "
                "(the file is not a secret)",
            )
        elif not where.path.strip("/"):
            r.problem("store.url", f"{url!r}: postgresql://USER@HOST:PORT/DATABASE")
        return base / "syncd.db", check, url
    if scheme != "sqlite" or not rest:
        r.problem(
            "store.url",
            f"{url!r}: sqlite:PATH, sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST/DB",
        )
        return base / "syncd.db", check, ""
    if rest.startswith("///"):
        return Path("/" + rest[3:].lstrip("/")), check, ""  # sqlite:////abs works too
    return base / rest.removeprefix("//"), check, ""


def _qbo(r: TableReader, data: dict[str, Any]) -> QboConfig:
    t = r.sub(
        data,
        "",
        "qbo",
        {
            "environment",
            "base_url",
            "reconcile_interval",
            "request_timeout",
            "throttle_pause",
            "time_scale",
            "monthly_reads_budget",
            "requests_per_minute",
            "batch_requests_per_minute",
        },
    )
    per_minute = r.integer(t, "qbo", "requests_per_minute", 450, low=1, high=500)
    return QboConfig(
        environment=r.text(
            t, "qbo", "environment", "production", ("production", "sandbox")
        ),
        base_url=_web_url(r, "qbo.base_url", r.text(t, "qbo", "base_url", "")),
        reconcile_interval=r.integer(t, "qbo", "reconcile_interval", 300, low=1),
        request_timeout=float(r.integer(t, "qbo", "request_timeout", 30, low=1)),
        throttle_pause=float(r.integer(t, "qbo", "throttle_pause", 60, low=1)),
        time_scale=float(r.integer(t, "qbo", "time_scale", 1, low=1)),
        monthly_reads_budget=r.integer(
            t, "qbo", "monthly_reads_budget", 500_000, low=0
        ),
        requests_per_minute=per_minute,
        batch_requests_per_minute=r.integer(
            t,
            "qbo",
            "batch_requests_per_minute",
            min(38, per_minute),
            low=1,
            high=min(40, per_minute),
        ),
    )


def _tenants(r: TableReader, data: dict[str, Any], base: Path) -> dict[str, Tenant]:
    raw = data.get("tenants", [])
    if not isinstance(raw, list):
        r.problem("tenants", "must be an array of tables: [[tenants]]")
        return {}
    tenants: dict[str, Tenant] = {}
    for n, entry in enumerate(raw):
        key = f"tenants[{n}]"
        t = r.table(entry, key, {"id", "rules"})
        tenant_id = r.text(t, key, "id")
        rules_path = base / r.text(t, key, "rules", "rules/default.toml")
        if tenant_id and not TENANT_ID_RE.match(tenant_id):
            r.problem(f"{key}.id", f"{tenant_id!r} must match [A-Za-z0-9_-]{{1,64}}")
        if tenant_id in tenants:
            r.problem(f"{key}.id", f"tenant {tenant_id!r} is declared twice")
        try:
            rules = load_rules(rules_path, rules_label(rules_path))
        except ConfigError as exc:
            r.problems.extend(exc.problems)
            continue
        tenants[tenant_id] = Tenant(id=tenant_id, rules_path=rules_path, rules=rules)
    if not raw:
        r.problem("tenants", "declare at least one [[tenants]]")
    return tenants


def rules_label(path: Path) -> str:
    """How rules are named in messages to the CRM: `rules/default.toml`, no server path."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def reload_rules(config: Config) -> dict[str, Rules]:
    """Re-read every tenant's rules; raise ConfigError and change nothing if any is bad."""
    problems: list[str] = []
    fresh: dict[str, Rules] = {}
    for tenant in config.tenants.values():
        try:
            fresh[tenant.id] = load_rules(
                tenant.rules_path, rules_label(tenant.rules_path)
            )
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return fresh
