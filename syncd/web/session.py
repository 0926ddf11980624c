"""The admin page's sessions: log in once with the admin token, then a cookie.

The cookie is Secure, HttpOnly and SameSite=Strict and holds only a random session id;
each session has its own CSRF token, which every form carries and every POST checks.
Sessions live in memory: a restart asks for the token again.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

COOKIE = "syncd_session"
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Session:
    """One logged-in browser."""

    csrf: str
    expires: datetime


class Sessions:
    """Session id → Session, for one process."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def start(self, response: web.StreamResponse, now: datetime) -> Session:
        """A new session, its cookie set on `response`."""
        self._by_id = {k: s for k, s in self._by_id.items() if s.expires > now}
        sid = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), expires=now + LIFETIME)
        self._by_id[sid] = session
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

    def of(self, request: web.Request, now: datetime) -> Session | None:
        """The request's live session, or None."""
        session = self._by_id.get(request.cookies.get(COOKIE, ""))
        return session if session is not None and session.expires > now else None

    def end(self, request: web.Request, response: web.StreamResponse) -> None:
        """Forget the request's session and its cookie."""
        self._by_id.pop(request.cookies.get(COOKIE, ""), None)
        response.del_cookie(COOKIE, path="/")


def csrf_ok(session: Session, given: str) -> bool:
    """The form's CSRF token is the session's (compared in constant time)."""
    return hmac.compare_digest(session.csrf.encode(), given.encode())
