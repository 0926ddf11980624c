"""A Mosquitto of the test's own, on a free loopback port (never the shared :1883)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from syncd.demo.services import free_port, mosquitto_binary
from tests.eventually import until

__all__ = ["Broker", "free_port", "mosquitto_binary"]


class Broker:
    """One Mosquitto process with persistence, restartable on the same port."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        nodelay: bool = True,
        extra_conf: str = "",
        conf: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        if conf is not None:  # a whole configuration of the test's (a shipped one)
            as_root = "user root\n" if os.geteuid() == 0 else ""
            self.conf.write_text(
                conf + f"\nlog_dest file {workdir}/mosquitto.log\n" + as_root
            )
            return
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            # Nagle on the broker adds ~40 ms to a lone message (delayed ACKs)
            + ("set_tcp_nodelay true\n" if nodelay else "")
            + f"log_dest file {workdir}/mosquitto.log\n"
            # as root, mosquitto would switch to its own user, which cannot write here
            + ("user root\n" if os.geteuid() == 0 else "")
            + extra_conf
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until(self._listens, timeout=10, every=0.02)

    def _listens(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log()}")
        socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its database first
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text() if path.exists() else ""
