"""`syncd demo`: start everything, play the stories, then leave it up for a look."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from syncd.demo.services import RULES, DemoError, Services
from syncd.demo.stories import ACME, GLOBEX, Table, play
from syncd.exceptions import QboError


def _globex_rules(folder: Path) -> Path:
    """The default rules, but an item QBO lacks fails the sync (PD3)."""
    path = folder / "globex-rules.toml"
    path.write_text(
        RULES.read_text().replace('on_missing = "create"', 'on_missing = "fail"')
    )
    return path


async def demo(echo: Callable[[str], None], *, stay: bool, workdir: Path | None) -> int:
    """Run the demo; the exit code."""
    folder = workdir or Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    services = Services(folder, {ACME: RULES, GLOBEX: _globex_rules(folder)})
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        try:
            echo(
                "starting Mosquitto, the QBO sandbox and syncd; connecting acme and globex…"
            )
            await services.start(http)
            echo(
                f"ready in {time.monotonic() - started:.1f} s: broker 127.0.0.1:"
                f"{services.broker_port}, QBO {services.sandbox_url}, syncd "
                f"{services.syncd_url}\n"
            )
            table = Table(echo)
            await play(services, http, table)
            echo(f"\n{len(table.rows)} steps in {time.monotonic() - started:.1f} s.")
            _where(echo, services)
            if stay:
                echo("syncd stays up: press Ctrl-C to stop.")
                await _until_interrupted()
        except DemoError as exc:
            echo(f"demo: {exc}")
            return 1
        except (QboError, aiohttp.ClientError) as exc:
            echo(f"demo: {exc}; the logs are in {folder}")
            return 1
        except TimeoutError:
            echo(f"demo: syncd did not answer in time; its log: {folder}/syncd.log")
            return 1
        else:
            return 0
        finally:
            services.stop()


def _where(echo: Callable[[str], None], services: Services) -> None:
    base = services.syncd_url
    echo(f"admin page: {base}/   (log in with the token {services.admin_token})")
    echo(f"admin API:  {base}/api/tenants/acme/invoices")
    auth = f"Authorization: Bearer {services.admin_token}"
    echo(f"            curl -H '{auth}' {base}/api/tenants/globex/failures")
    echo(f"MQTT:       mosquitto_sub -p {services.broker_port} -t 'syncd/#' -v")
    echo(f"files:      {services.workdir} (syncd.toml, syncd.db, the logs)")


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
