"""syncd.toml: contract format, secrets from the environment, every problem listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.config import load_config
from syncd.exceptions import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "default.toml").write_text(
        (ROOT / "rules" / "default.toml").read_text()
    )
    path = tmp_path / "syncd.toml"
    path.write_text(text)
    return path


def test_shipped_config_loads():
    """The repository's syncd.toml is valid and names the shipped rules."""
    config = load_config(ROOT / "syncd.toml", {})
    assert config.mqtt.port == 1883
    assert config.mqtt.topic_prefix == "syncd"
    assert config.http.port == 8080
    assert list(config.tenants) == ["acme"]


def test_secrets_come_from_the_environment_and_never_print(tmp_path):
    """Secrets are read from SYNCD_* variables and hidden from repr."""
    path = _write(tmp_path, '[[tenants]]\nid = "a"\nrules = "rules/default.toml"\n')
    config = load_config(path, {"SYNCD_MQTT_PASSWORD": "hunter2", "HOME": "/root"})
    assert config.secrets.get("MQTT_PASSWORD") == "hunter2"
    assert config.secrets.get("ADMIN_TOKEN") is None
    assert "hunter2" not in repr(config)


def test_store_urls(tmp_path):
    """sqlite:///abs is absolute; sqlite:rel is relative to the config file."""
    tenants = '[[tenants]]\nid = "a"\n'
    absolute = load_config(
        _write(tmp_path, f'[store]\nurl = "sqlite:///x/y.db"\n{tenants}')
    )
    assert absolute.store_path == Path("/x/y.db")
    relative = load_config(
        _write(tmp_path, f'[store]\nurl = "sqlite:data/s.db"\n{tenants}')
    )
    assert relative.store_path == tmp_path / "data" / "s.db"


def test_every_problem_is_listed_with_file_and_key(tmp_path):
    """Unknown keys, bad values and broken rules are all reported together."""
    path = _write(
        tmp_path,
        "[mqtt]\n"
        'url = "http://broker"\n'
        'clientid = "x"\n'
        "[http]\n"
        'listen = "nowhere"\n'
        "[store]\n"
        'url = "postgres://db"\n'
        "[[tenants]]\n"
        'id = "bad id!"\n'
        "[[tenants]]\n"
        'id = "b"\n'
        'rules = "rules/missing.toml"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    text = "\n".join(info.value.problems)
    assert f"{path}: mqtt.url: must look like" in text
    assert f"{path}: mqtt.clientid: unknown key" in text
    assert f"{path}: http.listen: 'nowhere' is not" in text
    assert f"{path}: store.url:" in text
    assert f"{path}: tenants[0].id: 'bad id!' must match" in text
    assert "rules/missing.toml: cannot read" in text


def test_duplicate_and_missing_tenants(tmp_path):
    """Tenant ids are unique, and at least one tenant is declared."""
    dup = _write(tmp_path, '[[tenants]]\nid = "a"\n[[tenants]]\nid = "a"\n')
    with pytest.raises(ConfigError, match="declared twice"):
        load_config(dup, {})
    none = _write(tmp_path, "[mqtt]\n")
    with pytest.raises(ConfigError, match="at least one"):
        load_config(none, {})


def test_mqtts_defaults_to_tls_port(tmp_path):
    """mqtts:// means TLS on 8883 unless a port is given."""
    path = _write(
        tmp_path, '[mqtt]\nurl = "mqtts://broker.example"\n[[tenants]]\nid = "a"\n'
    )
    config = load_config(path, {})
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == (
        "broker.example",
        8883,
        True,
    )
