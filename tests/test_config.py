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


def test_a_postgresql_store_takes_its_password_from_the_environment(tmp_path):
    """Issue 24: `[store] url = "postgresql://USER@HOST:PORT/DB"`, SYNCD_STORE_PASSWORD."""
    tenants = '[[tenants]]\nid = "a"\n'
    url = "postgresql://syncd@db.internal:5432/syncd"
    config = load_config(
        _write(tmp_path, f'[store]\nurl = "{url}"\n{tenants}'),
        {"SYNCD_STORE_PASSWORD": "s3cret"},
    )
    assert config.store_url == url
    assert config.secrets.get("STORE_PASSWORD") == "s3cret"
    assert "s3cret" in config.secrets.redactions()  # never in a log line
    with pytest.raises(ConfigError, match="SYNCD_STORE_PASSWORD, never in the URL"):
        load_config(
            _write(
                tmp_path,
                f'[store]\nurl = "postgresql://syncd:pw@db:5432/syncd"\n{tenants}',
            )
        )
    with pytest.raises(ConfigError, match="USER@HOST:PORT/DATABASE"):
        load_config(
            _write(tmp_path, f'[store]\nurl = "postgresql://syncd@db"\n{tenants}')
        )
    sqlite = load_config(_write(tmp_path, tenants))
    assert sqlite.store_url == ""  # the default: SQLite, nothing to install


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


@pytest.mark.parametrize(
    ("section", "line", "problem"),
    [
        (
            "mqtt",
            "receive_maximum = 70000",
            "mqtt.receive_maximum: must be at most 65535",
        ),
        ("mqtt", "keepalive = 70000", "mqtt.keepalive: must be at most 65535"),
        (
            "mqtt",
            "session_expiry = 9999999999999",
            "mqtt.session_expiry: must be at most 4294967295",
        ),
        ("mqtt", 'url = "mqtt://127.0.0.1:0"', "mqtt.url: has port 0"),
        (
            "mqtt",
            'url = "mqtt://user:secretpw@127.0.0.1:1883"',
            "mqtt.url: must not hold a user or password: set SYNCD_MQTT_USERNAME",
        ),
        (
            "mqtt",
            'topic_prefix = "sys\\u0000x"',
            "mqtt.topic_prefix: 'sys\\x00x' is not",
        ),
        ("http", 'listen = "127.0.0.1:0"', "http.listen: '127.0.0.1:0' is not"),
        ("http", 'listen = "nonsense host:8080"', "http.listen: 'nonsense host:8080'"),
        ("http", 'listen = "127.0.0.1:٣"', "http.listen:"),
        (
            "http",
            'public_url = "javascript:alert(1)"',
            "http.public_url: 'javascript:alert(1)' must be an http:// or https://",
        ),
        (
            "qbo",
            'base_url = "file:///etc/passwd"',
            "qbo.base_url: 'file:///etc/passwd' must be an http:// or https://",
        ),
    ],
)
def test_check_refuses_what_the_daemon_cannot_run(tmp_path, section, line, problem):
    """Issue 22 §9: each passed `syncd check` and failed at run time (or leaked)."""
    path = _write(tmp_path, f'[{section}]\n{line}\n[[tenants]]\nid = "a"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert any(problem in p for p in info.value.problems), info.value.problems
    assert "secretpw" not in "\n".join(info.value.problems)


def test_a_tenant_named_like_syncds_broker_user_is_refused(tmp_path):
    """Issue 22 §1: the per-tenant ACL pattern would give that CRM syncd's rights."""
    path = _write(tmp_path, '[[tenants]]\nid = "syncd"\n')
    with pytest.raises(ConfigError, match="has the name of syncd's own broker user"):
        load_config(path, {"SYNCD_MQTT_USERNAME": "syncd"})
    assert list(load_config(path, {}).tenants) == ["syncd"]
