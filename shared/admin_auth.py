"""The control plane's one lock: a bearer token (or HTTP basic password) from configuration.

Every control endpoint (journeys, segments, reports, exports, the dashboard, coupon pools)
depends on `admin_guard`; webhooks, the events API, tracking and health stay outside it.
Without a configured token the endpoints answer 503 rather than standing open.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request
from pydantic import SecretStr

# Basic only: browsers read one challenge per header, and "Bearer, Basic ..." makes Chromium
# skip its login prompt (tests/e2e/test_dashboard_browser.py). Bearer still works unasked.
CHALLENGE = {"WWW-Authenticate": 'Basic realm="rebound", charset="UTF-8"'}


def presented_secret(header: str | None) -> str | None:
    """The secret in `Bearer <token>` or `Basic base64(user:password)` (any user name)."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def admin_guard(token: SecretStr | None, setting: str) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: 401 without the token, 503 when none is configured (`setting`)."""

    async def require_admin(request: Request) -> None:
        if token is None:
            raise HTTPException(503, f"no admin token configured ({setting})")
        secret = presented_secret(request.headers.get("authorization"))
        expected = token.get_secret_value().encode()
        if secret is None or not hmac.compare_digest(secret.encode(), expected):
            raise HTTPException(401, "the admin token is required", headers=CHALLENGE)

    return require_admin
