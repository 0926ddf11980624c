"""The command line: run, check, rules graph."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import aiomqtt
import click
import structlog
from aiohttp import web

from syncd import logs
from syncd.backfill.handover import Handover, Report
from syncd.backfill.history import read_history
from syncd.config import Config, load_config
from syncd.daemon import open_store
from syncd.drift import follow as drift_check
from syncd.engine import rules_try
from syncd.engine.machine import mermaid
from syncd.exceptions import ConfigError, StoreError
from syncd.rules.model import Rules, load_rules
from syncd.store import postgres_store
from syncd.store.copy import Progress, copy_to_postgres
from syncd.store.database import copy_store
from syncd.web.app import build_app
from syncd.web.keys import DAEMON

log = structlog.get_logger(__name__)

_CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=Path("syncd.toml"),
    show_default=True,
    help="syncd.toml to use.",
)


@click.group()
@click.version_option(package_name="syncd")
def main() -> None:
    """Keep a CRM on an MQTT bus and QuickBooks Online in two-way sync."""


@main.command()
@_CONFIG
def run(config_path: Path) -> None:
    """Run the daemon until SIGTERM or SIGINT (SIGHUP reloads the rules)."""
    config = _load(config_path, exit_code=2)
    logs.setup(config.log_level, config.log_format, config.secrets.redactions())
    loop = asyncio.new_event_loop()
    _stop_once_on_signals(loop)
    app = build_app(config)
    try:
        web.run_app(
            app,
            host=config.http.host,
            port=config.http.port,
            print=None,
            shutdown_timeout=config.drain_seconds,
            handle_signals=False,
            loop=loop,
            # after a body cut off (guard.body_deadline), drop the connection at once
            # instead of reading what is left of it for aiohttp's default 10 s
            lingering_time=0,
        )
    except StoreError as exc:  # at start: one line naming the file, no traceback
        click.echo(f"syncd: {exc}", err=True)
        sys.exit(1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # all is flushed and closed: just exit
    if app[DAEMON].crashed:
        sys.exit(1)


def _stop_once_on_signals(loop: asyncio.AbstractEventLoop) -> None:
    """SIGTERM/SIGINT start a graceful stop; repeats (a supervisor insisting) are ignored.

    aiohttp's own handlers would raise again mid-drain and cut the outbox flush short.
    """
    stopping = False

    def handler() -> None:
        nonlocal stopping
        if stopping:
            log.info("already_stopping")
            return
        stopping = True
        raise web.GracefulExit

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler)


@main.command()
@_CONFIG
def health(config_path: Path) -> None:
    """Exit 0 when the syncd of this config is ready (store, broker, rules), else 1.

    For a container's HEALTHCHECK: asks the running daemon's /readyz and prints why not.
    """
    config = _load(config_path, exit_code=1)
    anywhere = ("0.0.0.0", "::", "")  # noqa: S104 -- read, not bound: ask loopback
    host = "127.0.0.1" if config.http.host in anywhere else config.http.host
    url = f"http://{host}:{config.http.port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            click.echo(answer.read().decode())
            sys.exit(0)
    except urllib.error.HTTPError as exc:
        click.echo(exc.read().decode() or f"HTTP {exc.code}", err=True)
    except OSError as exc:
        click.echo(f"syncd does not answer at {url}: {exc}", err=True)
    sys.exit(1)


@main.command()
@_CONFIG
@click.argument("destination", type=click.Path(path_type=Path))
def backup(config_path: Path, destination: Path) -> None:
    """Copy the store to DESTINATION consistently, while syncd runs (SQLite's backup).

    Restore: stop syncd, put the copy where `[store] url` points, start syncd.
    """
    config = _load(config_path, exit_code=2)
    if config.store_url:
        click.echo(
            "error: the store is PostgreSQL: back it up with pg_dump "
            "(docs/operations.md, 'PostgreSQL')",
            err=True,
        )
        sys.exit(2)
    try:
        counts = copy_store(config.store_path, destination)
    except FileExistsError:  # a file, a folder or a link (even dangling): not ours
        click.echo(f"error: {destination} exists: choose a new file", err=True)
        sys.exit(2)
    except (OSError, StoreError) as exc:
        click.echo(f"syncd: backup of {config.store_path} failed: {exc}", err=True)
        destination.unlink(missing_ok=True)
        sys.exit(1)
    summary = ", ".join(f"{n} {table}" for table, n in counts.items())
    click.echo(f"ok: {config.store_path} → {destination} ({summary})")


@main.command()
@_CONFIG
@click.option("--tenant", required=True, help="The tenant whose history this is.")
@click.option(
    "--since",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Hand over invoices created on or after this day (and their payments).",
)
@click.option(
    "--file",
    "history_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CRM's history: JSON Lines of envelopes, as published on its topics.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow until every QBO write of the history is made.",
)
def backfill(
    config_path: Path, tenant: str, since: datetime, history_path: Path, wait: bool
) -> None:
    """Sync the CRM's history from before the connection, beside the running daemon.

    Run it again after a crash: it hands over only what syncd has not applied.
    """
    config = _load(config_path, exit_code=2)
    _served(config, config_path, tenant)
    if not config.store_url and not config.store_path.exists():
        click.echo(
            f"error: no store at {config.store_path}: start syncd first", err=True
        )
        sys.exit(2)
    history = read_history(history_path, tenant, since.date())
    for problem in history.refused:
        click.echo(f"refused: {history_path}: {problem}", err=True)
    click.echo(
        f"{history_path}: {len(history.contacts)} contacts, {len(history.invoices)} "
        f"invoices, {len(history.payments)} payments to hand over; "
        f"{history.before_since} before {since.date()}, {history.replaced} older versions",
        err=True,
    )
    handover = Handover(
        config, tenant, history, lambda line: click.echo(line, err=True)
    )
    try:
        report = asyncio.run(handover.run(wait=wait))
    except (OSError, aiomqtt.MqttError, StoreError) as exc:
        click.echo(f"syncd: backfill stopped: {exc}; run it again to go on", err=True)
        sys.exit(1)
    for refusal in report.refused:
        click.echo(f"refused by syncd: {refusal}", err=True)
    click.echo(_backfill_summary(report))
    sys.exit(0 if report.clean and not history.refused else 1)


@main.command()
@_CONFIG
@click.option("--tenant", required=True, help="The tenant whose books to check.")
@click.option(
    "--heal/--no-heal",
    default=False,
    show_default=True,
    help="Mend what [drift.owner] gives a side (else only list).",
)
@click.option(
    "--timeout", default=900, show_default=True, help="Seconds to wait for the check."
)
def drift(config_path: Path, tenant: str, heal: bool, timeout: int) -> None:
    """Check where the CRM and QBO disagree (issue 27), beside the running daemon.

    The replica that holds the tenant's company runs the check; this follows its
    progress and prints the report. Exit 0 when nothing differs, 1 when something does.
    """
    config = _load(config_path, exit_code=2)
    _served(config, config_path, tenant)
    try:
        report = asyncio.run(
            drift_check.follow(
                open_store(config, check="schema"),
                tenant,
                heal,
                timeout,
                lambda line: click.echo(line, err=True),
            )
        )
    except (StoreError, TimeoutError, drift_check.DriftFailed) as exc:
        click.echo(f"syncd: drift check: {exc}", err=True)
        sys.exit(2)
    click.echo(drift_check.text(report))
    sys.exit(1 if report.differences else 0)


def _backfill_summary(report: Report) -> str:
    s = report.states
    return (
        f"backfill: {report.handed}/{report.total} handed over ({report.published} "
        f"published this run, {len(report.refused)} refused); invoices "
        f"{s['synced']} synced, {s['failed']} failed (see the admin page), "
        f"{s['skipped'] + s['not_synced']} kept out; {report.writes_left} QBO writes queued"
    )


@main.command()
@_CONFIG
def check(config_path: Path) -> None:
    """Validate syncd.toml and every rules file; list every problem (exit 1)."""
    config = _load(config_path, exit_code=1)
    for tenant in config.tenants.values():
        click.echo(f"ok: tenant {tenant.id}: {tenant.rules_path}")
    click.echo(f"ok: {config_path}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option(
    "--client-id",
    default="sandbox-client",
    envvar="SYNCD_QBO_CLIENT_ID",
    show_default=True,
)
@click.option(
    "--client-secret", default="sandbox-secret", envvar="SYNCD_QBO_CLIENT_SECRET"
)
@click.option(
    "--verifier-token", default="sandbox-verifier", envvar="SYNCD_QBO_VERIFIER_TOKEN"
)
@click.option(
    "--webhook-url",
    default=None,
    help="Where change notifications go (several, comma-separated: each in turn).",
)
@click.option(
    "--webhook-format",
    type=click.Choice(["legacy", "cloudevents"]),
    default="cloudevents",
    show_default=True,
)
@click.option(
    "--webhook-delay", default=0.2, show_default=True, help="Batching window, seconds."
)
@click.option(
    "--state",
    "state_file",
    type=click.Path(path_type=Path),
    help="Keep companies in this file.",
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    help="60 = a minute of QBO per second.",
)
@click.option(
    "--token-ttl",
    default=3600,
    show_default=True,
    help="Access token lifetime, seconds.",
)
@click.option(
    "--per-minute",
    default=500,
    show_default=True,
    help="Requests per realm per minute.",
)
@click.option(
    "--concurrent", default=10, show_default=True, help="Requests per realm at once."
)
@click.option(
    "--batch-per-minute",
    default=40,
    show_default=True,
    help="Batch requests per realm per minute.",
)
@click.option(
    "--per-second",
    default=10,
    show_default=True,
    help="Requests per realm per second, as QBO's sandbox companies (0: no limit).",
)
@click.option(
    "--hard-days",
    default=5 * 365,
    type=float,
    show_default=True,
    help="A grant's hard maximum in days (Intuit's 5 years): short, to try expiry warnings.",
)
def sandbox(**options: Any) -> None:
    """Serve the QBO sandbox: QBO's API, Intuit's OAuth and webhooks, on this machine."""
    from syncd.sandbox.server import build_app as build_sandbox
    from syncd.sandbox.state import SandboxConfig
    from syncd.sandbox.throttle import Limits

    logs.setup("info", "auto")
    host, port = options.pop("host"), options.pop("port")
    limits = Limits(
        per_minute=options.pop("per_minute"),
        concurrent=options.pop("concurrent"),
        per_second=options.pop("per_second"),
        batch_per_minute=options.pop("batch_per_minute"),
    )
    options["access_ttl"] = options.pop("token_ttl")
    config = SandboxConfig(limits=limits, **options)
    web.run_app(build_sandbox(config), host=host, port=port, print=None)


@main.command()
@click.option("--exit", "exit_after", is_flag=True, help="End after the stories.")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to keep the demo's files (default: a new temporary folder).",
)
def demo(exit_after: bool, workdir: Path | None) -> None:
    """Play syncd's stories with a private broker and the QBO sandbox: no account needed."""
    from syncd.demo.run import demo as play_demo

    code = asyncio.run(play_demo(click.echo, stay=not exit_after, workdir=workdir))
    sys.exit(code)


@main.group()
def store() -> None:
    """The store itself: moving it to another database."""


@store.command(name="copy")
@click.option("--from", "source", required=True, help="sqlite:///PATH (or sqlite:PATH)")
@click.option("--to", "target", required=True, help="postgresql://USER@HOST:PORT/DB")
def store_copy(source: str, target: str) -> None:
    """Copy a SQLite store into a PostgreSQL database, resumably, with progress.

    Stop syncd first. The password comes from SYNCD_STORE_PASSWORD. Run it again after an
    interruption: it goes on where it stopped. Then set `[store] url` to the database.
    """
    scheme, _, rest = source.partition(":")
    if scheme != "sqlite" or not rest:
        click.echo(f"error: --from {source!r}: sqlite:///PATH", err=True)
        sys.exit(2)
    if not target.startswith(("postgresql://", "postgres://")):
        click.echo(f"error: --to {target!r}: postgresql://USER@HOST:PORT/DB", err=True)
        sys.exit(2)
    path = Path("/" + rest[3:].lstrip("/")) if rest.startswith("///") else Path(rest)
    password = os.environ.get("SYNCD_STORE_PASSWORD") or None
    try:
        asyncio.run(_schema_on(target, password))
        counts = copy_to_postgres(path, target, password, _progress)
    except StoreError as exc:
        click.echo(f"\nsyncd: {exc}; run it again to go on", err=True)
        sys.exit(1)
    click.echo(f"\nok: {sum(counts.values())} rows copied into {target.split('@')[-1]}")


def _progress(step: Progress) -> None:
    share = f"{100 * step.copied // step.total} %" if step.total else "empty"
    line = f"\r{step.table}: {step.copied:,}/{step.total:,} ({share})"
    click.echo(line, err=True, nl=step.copied >= step.total)


async def _schema_on(url: str, password: str | None) -> None:
    """Create or update syncd's schema on the destination (as a start of syncd would)."""
    target = postgres_store(url, password)
    await target.open()
    await target.close()


@main.group()
def rules() -> None:
    """Look at rules files."""


@rules.command()
@_CONFIG
@click.option("--tenant", help="Draw this tenant's rules (default: the first).")
@click.argument("rules_file", required=False, type=click.Path(path_type=Path))
def graph(config_path: Path, tenant: str | None, rules_file: Path | None) -> None:
    """Print the state machine of a rules file as a Mermaid diagram."""
    try:
        if rules_file is None:
            config = load_config(config_path, os.environ)
            chosen = config.tenants.get(tenant) if tenant else None
            chosen = chosen or next(iter(config.tenants.values()))
            rules_file = chosen.rules_path
        click.echo(mermaid(load_rules(rules_file)))
    except ConfigError as exc:
        _fail(exc, 1)


@rules.command(name="try")
@_CONFIG
@click.option("--tenant", required=True, help="Whose recorded history to replay.")
@click.argument("rules_file", type=click.Path(path_type=Path))
def try_rules(config_path: Path, tenant: str, rules_file: Path) -> None:
    """Replay a tenant's recorded history against RULES_FILE; print what would change."""
    config = _load(config_path, exit_code=2)
    if tenant not in config.tenants:
        click.echo(f"error: no tenant {tenant!r} in {config_path}", err=True)
        sys.exit(2)
    try:
        new = load_rules(rules_file)
    except ConfigError as exc:
        _fail(exc, 1)
    old = load_rules(config.tenants[tenant].rules_path)
    report = asyncio.run(_replay(config, tenant, old, new))
    click.echo(f"{tenant}: {rules_file} against the history of {report[0]} invoice(s)")
    for line in rules_try.render(report[1]):
        click.echo(line)


async def _replay(
    config: Config, tenant: str, old: Rules, new: Rules
) -> tuple[int, rules_try.Report]:
    store = open_store(config, check="schema")
    await store.open()
    try:
        return await rules_try.replay(store, tenant, old, new)
    finally:
        await store.close()


def _served(config: Config, config_path: Path, tenant: str) -> None:
    """Exit 2 when `tenant` is not one of the config's."""
    if tenant not in config.tenants:
        click.echo(f"error: tenant {tenant!r} is not in {config_path}", err=True)
        sys.exit(2)


def _load(path: Path, exit_code: int) -> Config:
    try:
        return load_config(path, os.environ)
    except ConfigError as exc:
        _fail(exc, exit_code)


def _fail(exc: ConfigError, exit_code: int) -> NoReturn:
    for problem in exc.problems:
        click.echo(f"error: {problem}", err=True)
    click.echo(f"{len(exc.problems)} problem(s) found", err=True)
    sys.exit(exit_code)
