"""Issue 12: `syncd demo` plays every story against its own broker, sandbox and syncd."""

from __future__ import annotations

import subprocess
import sys


def test_the_demo_plays_every_story_and_ends(tmp_path):
    """README's first command, ended by `--exit`: each story's outcome is printed."""
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "demo", "--exit", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for expected in [
        "copied to QBO as #1001, balance 300.00",
        "QBO e-mailed it to ap@acme.test",
        "CRM told: sent → partially_paid",
        "CRM told: partially_paid → paid (balance 0.00)",
        "CRM told: open → voided",
        "refused: the rules",
        "failed: QBO has no item named 'Gold Plan'",
        "admin: retry",
        "copied to QBO as #2001",
        "QBO payment applied, balance 0.00",  # issue 26: the money after the invoice
        "QBO refund receipt #",
        "CRM told: deleted, balance 120.00; paid → open",
        "15 steps in",
    ]:
        assert expected in out, f"{expected!r} missing from:\n{out}"
    # everything it started is stopped: the store is closed and can be opened again
    assert (tmp_path / "syncd.db").exists()
    assert "Traceback" not in (tmp_path / "syncd.log").read_text()
