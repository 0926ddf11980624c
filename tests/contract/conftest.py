from __future__ import annotations

import aiohttp
import pytest

from tests.sandbox_process import Connection, SandboxProcess


@pytest.fixture
async def qbo(sandbox: SandboxProcess, http: aiohttp.ClientSession) -> Connection:
    """An app connected to a fresh company."""
    return await Connection(http, sandbox.origin).connect()
