"""Issue 13 (store faults, begun): `syncd backup` while syncd runs, and a restore.

The copy is SQLite's online backup, integrity-checked; a syncd started on it carries on
where the original left off.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from tests.crm import Crm, invoice
from tests.dbview import DbView
from tests.eventually import eventually
from tests.syncd_process import SyncdProcess, write_config


def _backup(config: Path, destination: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "syncd",
            "backup",
            "--config",
            str(config),
            str(destination),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_backup_while_running_restores_whole(tmp_path, broker):
    """A copy taken mid-stream is consistent; the final copy restores every invoice."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    syncd = SyncdProcess(write_config(workdir, broker.port))
    await asyncio.to_thread(syncd.start)
    try:
        async with Crm(broker.port) as crm:
            for n in range(60):
                await crm.send(
                    "acme", "invoice.upserted", invoice(f"I-{n}", 1, "draft")
                )
                if n == 30:  # while messages stream in
                    midway = await asyncio.to_thread(
                        _backup, syncd.config, tmp_path / "midway.db"
                    )
                    assert midway.returncode == 0, midway.stderr
            view = DbView(workdir / "syncd.db")
            await eventually(lambda: view.status("acme", "I-59") is not None)
        final = await asyncio.to_thread(_backup, syncd.config, tmp_path / "final.db")
        assert final.returncode == 0, final.stderr
        assert "60 invoices" in final.stdout
        again = await asyncio.to_thread(_backup, syncd.config, tmp_path / "final.db")
        assert again.returncode == 2 and "exists" in again.stderr  # never overwritten
    finally:
        syncd.stop()
    assert (tmp_path / "final.db").stat().st_mode & 0o077 == 0  # private, as the store
    # restore: a new syncd on the copy carries on (versions known, ledger kept)
    restored = tmp_path / "r"
    restored.mkdir()
    shutil.copy(tmp_path / "final.db", restored / "syncd.db")
    syncd = SyncdProcess(write_config(restored, broker.port))
    await asyncio.to_thread(syncd.start)
    try:
        view = DbView(restored / "syncd.db")
        assert view.status("acme", "I-0") == ("draft", 1)
        assert view.status("acme", "I-59") == ("draft", 1)
        async with Crm(broker.port) as crm:
            await crm.send("acme", "invoice.upserted", invoice("I-0", 2, "open"))
            await eventually(lambda: view.status("acme", "I-0") == ("open", 2))
    finally:
        syncd.stop()
    # the copy taken mid-stream passed SQLite's integrity check and holds a prefix
    assert midway.stdout.startswith("ok:")
    assert DbView(tmp_path / "midway.db").status("acme", "I-59") is None


def test_a_backup_never_follows_a_link_at_its_destination(tmp_path):
    """Issue 22 §9: a dangling symlink made the copy at its target (a /tmp race)."""
    workdir = tmp_path / "s"
    workdir.mkdir()
    config = write_config(workdir, 1883)
    DbView(workdir / "syncd.db").create_empty()
    target = tmp_path / "elsewhere" / "planted.db"
    target.parent.mkdir()
    link = tmp_path / "bk" / "link.db"
    link.parent.mkdir()
    link.symlink_to(target)
    result = _backup(config, link)
    assert result.returncode == 2, result.stderr
    assert "exists: choose a new file" in result.stderr
    assert not target.exists()
    assert link.is_symlink()  # left as it was
    fresh = _backup(config, tmp_path / "bk" / "copy.db")
    assert fresh.returncode == 0, fresh.stderr
    assert (tmp_path / "bk" / "copy.db").stat().st_mode & 0o777 == 0o600
