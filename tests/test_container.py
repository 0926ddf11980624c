"""Issue 12: the Dockerfile and compose.yaml name only what exists, and agree.

No container engine runs here, so what can be checked is checked: every file they copy
or mount exists, the config the image runs parses in the image's layout, ports, volumes,
users, env vars and commands agree with syncd itself, and the image installs syncd the
way CI does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from syncd.cli import main
from syncd.config import SECRET_NAMES, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _copies() -> list[tuple[str, str]]:
    """(source in the repository, destination in the image) of every COPY from here."""
    found = []
    for kind, args in _instructions():
        if kind == "COPY" and not args.startswith("--from"):
            *sources, dest = args.split()
            found += [(src, dest) for src in sources]
    return found


def _image_path(container: str) -> Path | None:
    """The repository path the image puts at `container` (by its COPY lines)."""
    for src, dest in _copies():
        if dest.startswith("/") and container.startswith(dest.rstrip("/")):
            rest = container[len(dest.rstrip("/")) :].lstrip("/")
            return ROOT / src / rest if rest else ROOT / src
    return None


def test_every_file_the_image_and_compose_use_exists():
    """COPY sources, mounted files and folders, the env file's example."""
    for src, _ in _copies():
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
    syncd = COMPOSE["services"]["syncd"]
    mosquitto = COMPOSE["services"]["mosquitto"]
    ignored = (ROOT / ".gitignore").read_text().split()
    readme = (ROOT / "README.md").read_text()
    for volume in syncd["volumes"] + mosquitto["volumes"]:
        host = volume.split(":")[0]
        if host.removeprefix("./") in ignored:  # a secret the operator makes
            assert f"mosquitto_passwd -c -b {host.removeprefix('./')}" in readme
        elif host.startswith("."):
            assert (ROOT / host).exists(), (
                f"compose mounts {host}, which does not exist"
            )
    [env_file] = syncd["env_file"]
    assert (ROOT / "deploy" / f"{env_file}.example").exists()
    assert (
        env_file in (ROOT / ".gitignore").read_text().split()
    )  # secrets stay out of git


def test_the_image_config_parses_in_the_image_layout(tmp_path):
    """The config the image runs, with the rules beside it as the image has them."""
    etc = tmp_path / "etc" / "syncd"
    config_src = _image_path("/etc/syncd/syncd.toml")
    rules_src = _image_path("/etc/syncd/rules")
    assert config_src is not None and rules_src is not None
    shutil.copytree(rules_src, etc / "rules")
    shutil.copy(config_src, etc / "syncd.toml")
    example = (ROOT / "deploy" / "syncd.env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    config = load_config(etc / "syncd.toml", {name: "x" for name in names})
    # the store is on the image's volume, the port is the one exposed and published
    [volume] = [args for kind, args in _instructions() if kind == "VOLUME"]
    assert config.store_path.is_relative_to(volume.strip())
    [exposed] = [args for kind, args in _instructions() if kind == "EXPOSE"]
    assert config.http.port == int(exposed)
    assert config.http.host == "0.0.0.0"  # noqa: S104 -- reachable from outside it
    published = {p.split(":")[1] for p in COMPOSE["services"]["syncd"]["ports"]}
    assert str(config.http.port) in published
    # the broker is compose's mosquitto service, on the port its config listens on
    assert config.mqtt.host in COMPOSE["services"]
    mosquitto_conf = (ROOT / "deploy" / "mosquitto.conf").read_text()
    assert f"listener {config.mqtt.port}" in mosquitto_conf
    # every secret syncd reads has a line in the example env file
    wanted = {f"SYNCD_{n}" for n in SECRET_NAMES} | {
        "SYNCD_QBO_CLIENT_ID",
        "SYNCD_MQTT_USERNAME",
    }
    assert wanted <= names


def test_the_broker_keeps_every_queued_message():
    """Mosquitto's defaults drop all but 1,000 per offline client and save every 30 min."""
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text()
    settings = dict(
        line.split("#")[0].split(None, 1)
        for line in conf.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["persistence"].strip() == "true"
    assert settings["max_queued_messages"].strip() == "0"  # no limit
    assert int(settings["autosave_interval"]) <= 5


def test_the_image_runs_as_a_user_with_a_health_check_and_syncds_own_commands():
    """Non-root, HEALTHCHECK by `syncd health`, CMD `syncd run`: commands that exist."""
    kinds = dict(_instructions())
    assert kinds["USER"] != "root"
    commands = set(main.commands)
    for kind in ("CMD", "HEALTHCHECK"):
        words = re.findall(r'"([^"]+)"', kinds[kind])
        assert words[0] == "syncd" and words[1] in commands, (kind, words)
        assert words[-1] == "/etc/syncd/syncd.toml"
    froms = [args for kind, args in _instructions() if kind == "FROM"]
    assert len(froms) == 2 and all("slim" in f for f in froms)  # multi-stage, slim


def test_the_image_installs_syncd_as_ci_does():
    """The same pip install of this project (without the dev extra) as .ci/run."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[dev]'" in ci
    runs = " ".join(args for kind, args in _instructions() if kind == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs)
    python = next(args for kind, args in _instructions() if kind == "FROM")
    assert python.startswith("python:3.11")  # the Python CI and pyproject use
    assert 'requires-python = ">=3.11"' in (ROOT / "pyproject.toml").read_text()


def test_the_shipped_deployment_is_closed_by_default():
    """Issue 22 §1: no anonymous client, an ACL, and ports on this host's loopback only.

    Before, Mosquitto took anonymous clients and compose published 1883 on every
    interface: anyone on the network voided a tenant's invoices in QBO.
    """
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text()
    settings = dict(
        line.split("#")[0].split(None, 1)
        for line in conf.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["allow_anonymous"].strip() == "false"
    mounted = {
        v.split(":")[1]: v.split(":")[0]
        for v in COMPOSE["services"]["mosquitto"]["volumes"]
    }
    assert mounted[settings["acl_file"].strip()] == "./deploy/mosquitto.acl"
    assert settings["password_file"].strip() in mounted
    for service in COMPOSE["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_postgresql_is_offered_closed_and_off_by_default():
    """Issue 24: compose's PostgreSQL runs only when asked and publishes no port.

    It takes the password syncd reads (SYNCD_STORE_PASSWORD), never one in the file.
    """
    postgres = COMPOSE["services"]["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert "ports" not in postgres
    assert "SYNCD_STORE_PASSWORD" in postgres["environment"]["POSTGRES_PASSWORD"]
    assert "postgres-data" in COMPOSE["volumes"]


def test_the_replicas_compose_runs_three_named_replicas_closed(tmp_path):
    """Issue 25: three replicas, each with a stable name of its own, closed.

    The broker keeps a dead replica's share under its client id: a stable name brings it
    back. One shared group, PostgreSQL, every port on loopback.
    """
    replicas_compose = yaml.safe_load((ROOT / "compose.replicas.yaml").read_text())
    services = replicas_compose["services"]
    replicas = {n: s for n, s in services.items() if n.startswith("syncd-")}
    assert len(replicas) == 3
    names = {s["environment"]["SYNCD_REPLICA"] for s in replicas.values()}
    assert names == set(replicas)  # each its own stable name
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith(".") and "passwords" not in host:
                assert (ROOT / host).exists(), host
    assert "ports" not in services["postgres"]
    example = (ROOT / "deploy" / "syncd.env.example").read_text()
    env = {line.split("=", 1)[0]: "x" for line in example.splitlines() if "=" in line}
    etc = tmp_path / "etc" / "syncd"  # the layout the image mounts it in
    shutil.copytree(ROOT / "rules", etc / "rules")
    shutil.copy(ROOT / "deploy" / "syncd.replicas.toml", etc / "syncd.toml")
    config = load_config(etc / "syncd.toml", env)
    assert config.mqtt.shared_group
    assert config.store_url.startswith("postgresql://")
    assert config.mqtt.host in services
    assert config.store_url.split("@")[1].split(":")[0] in services
