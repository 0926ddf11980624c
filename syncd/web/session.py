"""The admin page's sessions: log in once with the admin token, then a cookie.

The cookie is Secure, HttpOnly and SameSite=Strict and holds only a random session id;
each session has its own CSRF token, which every form carries and every POST checks.
Sessions live in the store, the id only as its SHA-256: a restart keeps them, and any
replica answers a logged-in browser. This process remembers its own too, so the page
still opens while the store cannot be used (it is where an admin reads why).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from aiohttp import web

from syncd.exceptions import StoreError
from syncd.store import AdminSessions

log = structlog.get_logger(__name__)
COOKIE = "syncd_session"
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in browser."""

    csrf: str
    expires: datetime


class Sessions:
    """Session ids and their sessions, kept by the store."""

    def __init__(self, store: AdminSessions) -> None:
        self._store = store
        self._here: dict[str, Session] = {}  # this process's, by hashed id

    async def start(self, response: web.StreamResponse, now: datetime) -> Session:
        """A new session, its cookie set on `response`."""
        sid = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=now + LIFETIME)
        key = _hashed(sid)
        self._here = {k: v for k, v in self._here.items() if v.expires > now}
        self._here[key] = session
        try:
            await self._store.start_session(key, session.csrf, session.expires, now)
        except StoreError as exc:  # this process knows it; others will not
            log.warning("admin_session_not_stored", reason=str(exc))
        response.set_cookie(
            COOKIE,
            sid,
            max_age=int(LIFETIME.total_seconds()),
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        return session

    async def of(self, request: web.Request, now: datetime) -> Session | None:
        """The request's live session, or None."""
        sid = request.cookies.get(COOKIE, "")
        if not sid:
            return None
        key = _hashed(sid)
        if (here := self._here.get(key)) is not None:
            return here if here.expires > now else None
        try:
            found = await self._store.session(key, now)
        except StoreError:
            return None
        return Session(csrf=found[0], expires=found[1]) if found else None

    async def end(self, request: web.Request, response: web.StreamResponse) -> None:
        """Forget the request's session and its cookie."""
        if sid := request.cookies.get(COOKIE, ""):
            self._here.pop(_hashed(sid), None)
            with contextlib.suppress(StoreError):  # logged out here at least
                await self._store.end_session(_hashed(sid))
        response.del_cookie(COOKIE, path="/")


def _hashed(sid: str) -> str:
    """What the store keeps of a cookie's id: it cannot be turned back into a cookie."""
    return hashlib.sha256(sid.encode()).hexdigest()


def csrf_ok(session: Session, given: str) -> bool:
    """The form's CSRF token is the session's (compared in constant time)."""
    return hmac.compare_digest(session.csrf.encode(), given.encode())
