"""The aiohttp application's keys, shared by the route modules."""

from __future__ import annotations

from aiohttp import web

from syncd.config import Config
from syncd.daemon import Daemon

CONFIG = web.AppKey("config", Config)
DAEMON = web.AppKey("daemon", Daemon)
