"""Issue 13 (security): syncd on a broker that wants TLS and a password.

A Mosquitto of the test's own: TLS with a certificate from a CA the test makes, no
anonymous clients, a password file. syncd connects with `mqtts://`, `[mqtt] ca_file` and
SYNCD_MQTT_USERNAME / SYNCD_MQTT_PASSWORD; a wrong password or an unknown CA keeps it
not ready, and the log says why.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.crm import envelope, invoice
from tests.eventually import eventually
from tests.mosquitto import Broker
from tests.syncd_process import SyncdProcess, write_config

USER, PASSWORD = "syncd", "s3cret-broker-password"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1: (ca, cert, key) files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("syncd test CA"))
        .issuer_name(_name("syncd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "broker.pem", folder / "broker.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return paths


def _passwd() -> str:
    """mosquitto_passwd comes with Debian's mosquitto package."""
    return shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


@pytest.fixture
def secured(tmp_path) -> Iterator[tuple[Broker, Path]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = _certificates(certs)
    passwords = certs / "passwords"
    subprocess.run([_passwd(), "-b", "-c", str(passwords), USER, PASSWORD], check=True)
    broker = Broker(
        tmp_path / "broker",
        extra_conf=(
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
            f"allow_anonymous false\npassword_file {passwords}\n"
        ),
    )
    broker.start()
    yield broker, ca
    broker.stop()


def _syncd(
    tmp_path: Path, broker: Broker, ca: Path | None, password: str
) -> SyncdProcess:
    workdir = tmp_path / f"s-{password[:4]}-{ca is not None}"
    workdir.mkdir()
    config = write_config(workdir, broker.port)
    text = config.read_text().replace("mqtt://", "mqtts://")
    if ca is not None:
        text = text.replace("[mqtt]\n", f'[mqtt]\nca_file = "{ca}"\n')
    config.write_text(text)
    env = {"SYNCD_MQTT_USERNAME": USER, "SYNCD_MQTT_PASSWORD": password}
    return SyncdProcess(config, env=env)


async def test_tls_and_a_password_to_the_broker(secured, tmp_path):
    """mqtts:// with the broker's CA and the right password: ready, messages flow."""
    broker, ca = secured
    syncd = _syncd(tmp_path, broker, ca, PASSWORD)
    await asyncio.to_thread(syncd.start)
    try:
        tls = ssl.create_default_context(cafile=str(ca))
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username=USER, password=PASSWORD, tls_context=tls
        ) as crm:
            await crm.subscribe("syncd/acme/sync/#", qos=1)
            body = envelope("acme", "invoice.upserted", invoice("INV-1", 1, "draft"))
            await crm.publish(
                "syncd/acme/crm/invoice/upserted", json.dumps(body), qos=1
            )
            async with asyncio.timeout(15):
                message = await anext(crm.messages)
        assert json.loads(message.payload)["data"]["invoice_id"] == "INV-1"
        assert PASSWORD not in syncd.log()
    finally:
        syncd.stop()


@pytest.mark.parametrize("wrong", ["password", "ca"])
async def test_a_wrong_password_or_an_unknown_ca_keeps_syncd_not_ready(
    secured, tmp_path, wrong
):
    """Never connected insecurely or anonymously: not ready, and the log says why."""
    broker, ca = secured
    if wrong == "password":
        syncd = _syncd(tmp_path, broker, ca, "not-the-password")
        why = "Not authorized"
    else:
        syncd = _syncd(tmp_path, broker, None, PASSWORD)  # the system's CAs only
        why = "CERTIFICATE_VERIFY_FAILED"
    syncd.start(wait_ready=False)
    try:
        await eventually(lambda: why in syncd.log())
        status, body = syncd.get("/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["broker"] is False
        assert "not-the-password" not in syncd.log()
        # and it stops when asked (its publisher waited for the broker forever before)
        started = time.monotonic()
        assert syncd.stop() == 0
        assert time.monotonic() - started < 15
        assert "syncd_stopped" in syncd.log()
    finally:
        syncd.stop()
