"""Signed tracking tokens: what the open pixel, click redirect and unsubscribe URLs carry.

A token is `kid.payload.signature`, all URL-safe: `payload` is base64url of a compact JSON
array naming the message (and, for a click, which link and its exact target), `signature` is
HMAC-SHA256 over `kid.payload` with the deployment secret called `kid`, cut to 128 bits.
Several keys are accepted so a secret can be rotated while mail already sent keeps working;
the first key of the list (the newest) signs. The click target travels inside the signed
payload, so the redirect goes exactly where the sent mail pointed: no open redirect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

TokenKind = Literal["open", "click", "unsubscribe"]
_KIND_CODES: dict[TokenKind, str] = {"open": "o", "click": "c", "unsubscribe": "u"}
_CODE_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
FORMAT_VERSION = 1
SIGNATURE_BYTES = 16  # 128 bits: forging one is as hard as guessing a random 128-bit value
_DOMAIN = b"rebound-tracking-v1\x1f"  # these keys sign nothing else, even by accident


class TrackingKey(BaseModel):
    """One deployment secret; `kid` appears in every token it signs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kid: str = Field(pattern=r"^[A-Za-z0-9_-]{1,16}$", description="Key id, e.g. 2026-11.")
    secret: SecretStr = Field(min_length=32, description="At least 32 random characters.")


class InvalidToken(ValueError):
    """Altered, forged, signed by an unknown key, malformed or expired: record nothing."""


@dataclass(frozen=True)
class MessageRef:
    """Which message a token belongs to, and whose it is (the key of its events)."""

    shop_id: str
    customer_key: str
    request_key: str
    journey_id: str
    step_id: str
    sent_at: datetime


@dataclass(frozen=True)
class Link:
    """Link `index` of the `count` links the message had, pointing at `url`."""

    index: int
    count: int
    url: str


@dataclass(frozen=True)
class Claims:
    kind: TokenKind
    message: MessageRef
    link: Link | None = None


class TokenSigner:
    def __init__(self, keys: Sequence[TrackingKey]) -> None:
        if not keys:
            raise ValueError("tracking needs at least one key (kid and secret)")
        kids = [k.kid for k in keys]
        if len(set(kids)) != len(kids):
            raise ValueError(f"tracking key ids must be unique: {kids}")
        self._signing_kid = keys[0].kid
        self._secrets = {k.kid: k.secret.get_secret_value().encode() for k in keys}

    def sign(self, claims: Claims) -> str:
        if (claims.kind == "click") != (claims.link is not None):
            raise ValueError("a click token names its link; other tokens do not")
        payload = _b64(orjson.dumps(_to_array(claims)))
        signed = f"{self._signing_kid}.{payload}"
        return f"{signed}.{_b64(self._mac(self._signing_kid, signed))}"

    def verify(
        self,
        token: str,
        kind: TokenKind,
        now: datetime | None = None,
        max_age: timedelta | None = None,
    ) -> Claims:
        """The claims of a token this deployment signed, of this kind, not older than max_age."""
        kid, payload, signature = _split(token)
        if kid not in self._secrets:
            raise InvalidToken("unknown key id")
        if not hmac.compare_digest(self._mac(kid, f"{kid}.{payload}"), _unb64(signature)):
            raise InvalidToken("bad signature")
        claims = _from_array(_json(_unb64(payload)))
        if claims.kind != kind:
            raise InvalidToken(f"a {claims.kind} token, not a {kind} token")
        if now is not None and max_age is not None and now - claims.message.sent_at > max_age:
            raise InvalidToken("expired")
        return claims

    def _mac(self, kid: str, signed: str) -> bytes:
        digest = hmac.new(self._secrets[kid], _DOMAIN + signed.encode(), hashlib.sha256).digest()
        return digest[:SIGNATURE_BYTES]


def _to_array(claims: Claims) -> list[Any]:
    m = claims.message
    sent_at_s = int(m.sent_at.timestamp())
    out: list[Any] = [FORMAT_VERSION, _KIND_CODES[claims.kind], m.shop_id, m.customer_key]
    out += [m.request_key, m.journey_id, m.step_id, sent_at_s]
    if claims.link is not None:
        out += [claims.link.index, claims.link.count, claims.link.url]
    return out


def _from_array(data: Any) -> Claims:
    if not isinstance(data, list) or len(data) not in (8, 11) or data[0] != FORMAT_VERSION:
        raise InvalidToken("unknown token format")
    kind = _CODE_KINDS.get(data[1]) if isinstance(data[1], str) else None
    if kind is None or not all(isinstance(v, str) for v in data[2:7]):
        raise InvalidToken("unknown token format")
    if not isinstance(data[7], int):
        raise InvalidToken("unknown token format")
    shop_id, customer_key, request_key, journey_id, step_id = data[2:7]
    sent_at = datetime.fromtimestamp(data[7], UTC)
    message = MessageRef(shop_id, customer_key, request_key, journey_id, step_id, sent_at)
    return Claims(kind, message, _link(data[8:]) if len(data) == 11 else None)


def _link(data: list[Any]) -> Link:
    index, count, url = data
    if not (isinstance(index, int) and isinstance(count, int) and isinstance(url, str)):
        raise InvalidToken("unknown token format")
    return Link(index, count, url)


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("not kid.payload.signature")
    return parts[0], parts[1], parts[2]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        # validate=True refuses characters outside the URL-safe alphabet instead of dropping
        # them, so an altered character can never decode to the same bytes.
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("not base64url") from exc
    if _b64(raw) != text:  # the last character's unused bits: only the canonical form counts
        raise InvalidToken("not canonical base64url")
    return raw


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidToken("payload is not JSON") from exc
