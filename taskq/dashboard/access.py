"""Who may act: API clients with `Authorization: Bearer <token>`, browsers with the session
cookie the login form sets and the CSRF token of the page they post from.

Without a token the dashboard is read-only. Nothing is stored server-side: a session is a
random nonce with its HMAC under the token, and a page's CSRF token is the HMAC of that
session, so changing the token signs every browser out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request

SESSION_COOKIE = "taskq_session"
CSRF_FIELD = "csrf"
FORM = "application/x-www-form-urlencoded"
MAX_FORM = 64 * 1024
READ_ONLY = "the dashboard is read-only: start it with TASKQ_DASHBOARD_TOKEN (or _FILE) set"


class Access:
    def __init__(self, token: str | None) -> None:
        self._key = token.encode() if token else None

    def __repr__(self) -> str:
        return f"Access(read_only={self.read_only})"

    @property
    def read_only(self) -> bool:
        return self._key is None

    def token_matches(self, given: str) -> bool:
        return self._key is not None and hmac.compare_digest(given.encode(), self._key)

    def new_session(self) -> str:
        """A cookie value for a browser that gave the token."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac('session:' + nonce)}"

    def signed_in(self, request: Request) -> bool:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        nonce, _, mac = cookie.partition(".")
        return (
            self._key is not None
            and bool(nonce)
            and hmac.compare_digest(mac, self._mac("session:" + nonce))
        )

    def csrf_token(self, request: Request) -> str | None:
        """The token a signed-in browser's forms carry; None when it may not act."""
        if not self.signed_in(request):
            return None
        return self._mac("csrf:" + request.cookies[SESSION_COOKIE])

    async def check(self, request: Request) -> None:
        """Let an action through, or refuse it: 403 when read-only, 401 without a valid
        bearer token or session, 403 for a session whose CSRF token is missing or wrong."""
        if self._key is None:
            raise HTTPException(403, READ_ONLY)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            if not self.token_matches(given.strip()):
                raise HTTPException(401, "wrong token", {"WWW-Authenticate": "Bearer"})
            return
        if not self.signed_in(request):
            raise HTTPException(401, "sign in, or send Authorization: Bearer <token>")
        expected = self.csrf_token(request) or ""
        form = await form_of(request)
        given = (form.get(CSRF_FIELD) or [request.headers.get("x-csrf-token", "")])[0]
        if not hmac.compare_digest(given, expected):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")

    def _mac(self, text: str) -> str:
        assert self._key is not None
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


async def form_of(request: Request) -> dict[str, list[str]]:
    """A page's form post (URL-encoded: the only kind the pages send) → name → values."""
    if request.headers.get("content-type", "").split(";")[0] != FORM:
        return {}
    body = await request.body()
    if len(body) > MAX_FORM:
        raise HTTPException(413, f"a form post is at most {MAX_FORM} bytes")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
