"""The command line as an admin runs it: `syncd check`, `syncd rules graph`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _syncd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_check_accepts_the_shipped_config():
    """`syncd check` exits 0 on the repository's syncd.toml and rules."""
    result = _syncd("check", "--config", "syncd.toml")
    assert result.returncode == 0, result.stderr
    assert "ok: tenant acme: " in result.stdout


def test_check_lists_every_problem_and_exits_1(tmp_path):
    """Each kind of problem is reported with file and key; the exit code is 1."""
    rules = (ROOT / "rules" / "default.toml").read_text()
    rules = rules.replace(
        'draft = ["open", "deleted"]', 'draft = ["open", "deleted", "lost"]'
    )
    rules = rules.replace("\npaid = [", '\nvoided = ["open"]\npaid = [')
    rules = rules.replace('on = ["open", "sent"]', 'on = ["open", "sent", "archived"]')
    rules = rules.replace('all = ["draft",', 'all = ["archived", "draft",').replace(
        'initial = "draft"', 'initial = "draft"\ncolour = "red"'
    )
    (tmp_path / "broken.toml").write_text(rules)
    (tmp_path / "syncd.toml").write_text(
        '[[tenants]]\nid = "acme"\nrules = "broken.toml"\n'
    )
    result = _syncd("check", "--config", str(tmp_path / "syncd.toml"))
    assert result.returncode == 1
    err = result.stderr
    broken = tmp_path / "broken.toml"
    assert f"error: {broken}: statuses.colour: unknown key" in err
    assert f"error: {broken}: moves.draft: unknown status 'lost'" in err
    assert f"error: {broken}: moves.voided: 'voided' is final" in err
    assert f"error: {broken}: sync.on: 'archived' cannot be reached" in err
    assert "problem(s) found" in err


def test_rules_graph_prints_mermaid():
    """The state machine is drawn as Mermaid text with every allowed move."""
    result = _syncd("rules", "graph", "--config", "syncd.toml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stateDiagram-v2" in out
    assert "draft --> open: to_open" in out
    assert "paid --> partially_paid: to_partially_paid" in out
    assert "voided -->" not in out


def test_run_refuses_a_bad_config(tmp_path):
    """`syncd run` with invalid config exits 2 before touching anything."""
    (tmp_path / "syncd.toml").write_text("[mqtt]\nurl = 5\n")
    result = _syncd("run", "--config", str(tmp_path / "syncd.toml"))
    assert result.returncode == 2
    assert "mqtt.url: must be a string" in result.stderr


def test_deeply_nested_toml_is_one_line_not_a_traceback(tmp_path):
    """Issue 22 §9: 2,000 nested lists were a 3,000-line RecursionError traceback."""
    deep = "a = " + "[" * 2000 + "]" * 2000 + "\n"
    (tmp_path / "deep.toml").write_text(deep)
    (tmp_path / "syncd.toml").write_text(
        '[[tenants]]\nid = "acme"\nrules = "deep.toml"\n'
    )
    (tmp_path / "deep-syncd.toml").write_text(deep)
    for args in (
        ("check", "--config", str(tmp_path / "syncd.toml")),
        ("check", "--config", str(tmp_path / "deep-syncd.toml")),
        ("rules", "graph", "--config", str(tmp_path / "syncd.toml")),
        ("run", "--config", str(tmp_path / "syncd.toml")),
    ):
        result = _syncd(*args)
        assert result.returncode in (1, 2), (args, result.stderr)
        assert "nested too deeply" in result.stderr, args
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) < 5
