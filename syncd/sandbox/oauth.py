"""Intuit's OAuth 2.0: consent, code → tokens, rotating refresh tokens, revoke, discovery.

Refresh tokens rotate on every refresh and the superseded one answers `invalid_grant`
(Intuit's overlap after rotation is UNCONFIRMED in qbo.md; the strictest reading is the
one a client must survive).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from syncd.sandbox import faults
from syncd.sandbox.clock import utc_now

SCOPE_ACCOUNTING = "com.intuit.quickbooks.accounting"
REFRESH_TTL = timedelta(days=100)
HARD_DAYS = 5 * 365  # the 5-year maximum since Intuit's 2025 policy


@dataclass
class Grant:
    """One company's consent to the app: the tokens it has issued."""

    realm_id: str
    refresh_token: str
    refresh_expires: datetime
    hard_expires: datetime  # qbo.md §8, §10: no refresh extends a grant past this
    revoked: bool = False


@dataclass
class AccessToken:
    """A bearer token for one realm."""

    grant: Grant
    expires: datetime


class OAuthError(Exception):
    """A token-endpoint error: `{"error": …}` with its HTTP status."""

    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


class OAuthServer:
    """Issues and checks tokens for one app (client id and secret)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        access_ttl: int = 3600,
        hard_days: float = HARD_DAYS,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_ttl = timedelta(seconds=access_ttl)
        self.hard_ttl = timedelta(days=hard_days)
        self.codes: dict[
            str, tuple[str, str, datetime]
        ] = {}  # code → realm, redirect, expiry
        self.grants: dict[str, Grant] = {}  # by current refresh token
        self.superseded: set[str] = set()
        # refresh tokens presented after they were replaced: a replica holding a stale
        # copy, or two refreshing at once (each a needs_reconnect at Intuit)
        self.spent_presented = 0
        # …of which after their replacement was in use (the replacement's access token
        # called the API, or its refresh token was presented): a client that kept a
        # stale copy. The others follow a lost answer (a crash before it was stored).
        self.spent_after_use = 0
        self._replaced_by: dict[str, tuple[str, str]] = {}  # old RT → new RT, access
        self._used: set[str] = set()  # access tokens that called the API
        self.access: dict[str, AccessToken] = {}

    def authorize(self, params: dict[str, str], realm_id: str) -> str:
        """Consent at once; return the callback URL with code, state and realmId."""
        if params.get("client_id") != self.client_id:
            raise OAuthError(400, "invalid_client", "unknown client_id")
        if params.get("response_type") != "code":
            raise OAuthError(400, "unsupported_response_type")
        if SCOPE_ACCOUNTING not in params.get("scope", "").split():
            raise OAuthError(
                400, "invalid_scope", f"scope must include {SCOPE_ACCOUNTING}"
            )
        redirect = params.get("redirect_uri", "")
        if not redirect:
            raise OAuthError(400, "invalid_request", "redirect_uri is required")
        code = secrets.token_urlsafe(32)
        self.codes[code] = (realm_id, redirect, utc_now() + timedelta(minutes=5))
        sep = "&" if "?" in redirect else "?"
        state = params.get("state", "")
        from urllib.parse import urlencode

        return f"{redirect}{sep}{urlencode({'code': code, 'state': state, 'realmId': realm_id})}"

    def token(
        self, authorization: str | None, form: dict[str, str], hard: bool = False
    ) -> dict[str, Any]:
        """The token endpoint: authorization_code and refresh_token grants.

        `hard`: the caller sent `x-include-refresh-token-hard-expires-in: true`, and gets
        `x_refresh_token_hard_expires_in` (qbo.md §8).
        """
        self._client(authorization)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            answer = self._exchange(form)
        elif grant_type == "refresh_token":
            answer = self._refresh(form.get("refresh_token", ""))
        else:
            raise OAuthError(400, "unsupported_grant_type")
        grant = self.grants[answer["refresh_token"]]
        if hard:
            answer["x_refresh_token_hard_expires_in"] = _seconds_until(
                grant.hard_expires
            )
        return answer

    def revoke(self, authorization: str | None, token: str) -> None:
        """Revoke a refresh or access token: the whole grant stops working."""
        self._client(authorization)
        grant = self.grants.get(token) or getattr(self.access.get(token), "grant", None)
        if grant is not None:
            grant.revoked = True

    def check(self, authorization: str | None, realm_id: str) -> None:
        """Check a bearer token for an API call; raise QBO's 401 when it fails."""
        if not authorization or not authorization.startswith("Bearer "):
            raise faults.unauthorized(None)
        token = self.access.get(authorization.removeprefix("Bearer ").strip())
        if token is None:
            raise faults.unauthorized(
                "Malformed bearer token: the token is not recognized"
            )
        if token.grant.revoked:
            raise faults.unauthorized("Token revoked")
        if token.expires <= utc_now():
            raise faults.unauthorized(f"Token expired: {token.expires.isoformat()}")
        if token.grant.realm_id != realm_id:
            raise faults.wrong_realm()
        self._used.add(authorization.removeprefix("Bearer ").strip())

    def expire_access(self, realm_id: str | None = None) -> int:
        """Make access tokens expire now (for tests of refresh); return how many."""
        count = 0
        for token in self.access.values():
            if realm_id is None or token.grant.realm_id == realm_id:
                token.expires = utc_now() - timedelta(seconds=1)
                count += 1
        return count

    def issued(self) -> dict[str, Any]:
        """Every token handed out so far, live or not (a test greps logs for them)."""
        return {
            "access": list(self.access),
            "refresh": [*self.grants, *self.superseded],
            "spent_presented": self.spent_presented,
            "spent_after_use": self.spent_after_use,
        }

    def revoke_all(self, realm_id: str | None = None) -> int:
        """Revoke every grant (of one realm); return how many."""
        grants = {id(t.grant): t.grant for t in self.access.values()} | {
            id(g): g for g in self.grants.values()
        }
        count = 0
        for grant in grants.values():
            if realm_id is None or grant.realm_id == realm_id:
                grant.revoked = True
                count += 1
        return count

    def _client(self, authorization: str | None) -> None:
        expected = base64.b64encode(
            f"{self.client_id}:{self.client_secret}".encode()
        ).decode()
        if authorization != f"Basic {expected}":
            raise OAuthError(401, "invalid_client", "client authentication failed")

    def _exchange(self, form: dict[str, str]) -> dict[str, Any]:
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None or entry[2] < utc_now():
            raise OAuthError(
                400, "invalid_grant", "the authorization code is invalid or used"
            )
        realm_id, redirect, _ = entry
        if form.get("redirect_uri") != redirect:
            raise OAuthError(400, "invalid_grant", "redirect_uri does not match")
        now = utc_now()
        hard = now + self.hard_ttl
        grant = Grant(realm_id, "", min(now + REFRESH_TTL, hard), hard)
        return self._issue(grant)

    def _refresh(self, refresh_token: str) -> dict[str, Any]:
        grant = self.grants.get(refresh_token)
        if refresh_token in self.superseded:
            self.spent_presented += 1
            new_refresh, new_access = self._replaced_by.get(refresh_token, ("", ""))
            if new_refresh in self.superseded or new_access in self._used:
                self.spent_after_use += 1
        if grant is None or grant.revoked or grant.refresh_expires < utc_now():
            raise OAuthError(400, "invalid_grant", "Incorrect or invalid refresh token")
        del self.grants[refresh_token]
        self.superseded.add(refresh_token)
        # rolling expiry, never past the hard one
        grant.refresh_expires = min(utc_now() + REFRESH_TTL, grant.hard_expires)
        answer = self._issue(grant)
        self._replaced_by[refresh_token] = (
            answer["refresh_token"],
            answer["access_token"],
        )
        return answer

    def _issue(self, grant: Grant) -> dict[str, Any]:
        grant.refresh_token = "RT1-" + secrets.token_urlsafe(40)
        self.grants[grant.refresh_token] = grant
        access = secrets.token_urlsafe(48)
        self.access[access] = AccessToken(grant, utc_now() + self.access_ttl)
        return {
            "token_type": "bearer",
            "access_token": access,
            "expires_in": int(self.access_ttl.total_seconds()),
            "refresh_token": grant.refresh_token,
            "x_refresh_token_expires_in": _seconds_until(grant.refresh_expires),
        }


def _seconds_until(moment: datetime) -> int:
    return max(0, int((moment - utc_now()).total_seconds()))


def discovery(origin: str) -> dict[str, Any]:
    """The discovery document, every endpoint on this origin."""
    return {
        "issuer": f"{origin}/op/v1",
        "authorization_endpoint": f"{origin}/connect/oauth2",
        "token_endpoint": f"{origin}/oauth2/v1/tokens/bearer",
        "userinfo_endpoint": f"{origin}/v1/openid_connect/userinfo",
        "revocation_endpoint": f"{origin}/v2/oauth2/tokens/revoke",
        "jwks_uri": f"{origin}/op/v1/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": [
            "openid",
            "email",
            "profile",
            "address",
            "phone",
            SCOPE_ACCOUNTING,
            "com.intuit.quickbooks.payment",
        ],
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "client_secret_basic",
        ],
        "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
    }
