"""Tracking tokens: only what this deployment signed, unaltered, by a key it still knows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from shared.tracking import Claims, InvalidToken, Link, MessageRef, TokenSigner, TrackingKey

SENT_AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MESSAGE = MessageRef(
    shop_id="demo-shop",
    customer_key="demo-shop:c:7321847104983451234",
    request_key="win-back:42:reason",
    journey_id="win-back",
    step_id="reason",
    sent_at=SENT_AT,
)
CLICK = Claims("click", MESSAGE, Link(1, 3, "https://shop.example/p/7?utm=mail&x=ä"))
URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def key(kid: str, fill: str = "s") -> TrackingKey:
    return TrackingKey(kid=kid, secret=SecretStr(fill * 40))


def test_a_signed_click_round_trips_with_its_exact_target() -> None:
    signer = TokenSigner([key("k1")])
    token = signer.sign(CLICK)
    assert set(token) <= URL_SAFE
    assert signer.verify(token, "click") == CLICK


@pytest.mark.parametrize("kind", ["open", "unsubscribe"])
def test_open_and_unsubscribe_tokens_name_the_message(kind: str) -> None:
    signer = TokenSigner([key("k1")])
    claims = Claims(kind, MESSAGE)  # type: ignore[arg-type]
    assert signer.verify(signer.sign(claims), kind) == claims  # type: ignore[arg-type]


def test_changing_any_single_character_is_refused() -> None:
    signer = TokenSigner([key("k1")])
    token = signer.sign(CLICK)
    for position, original in enumerate(token):
        for replacement in "A", "B", "-", "_", ".":
            if replacement == original:
                continue
            altered = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(InvalidToken):
                signer.verify(altered, "click")


def test_a_token_of_another_kind_is_refused() -> None:
    signer = TokenSigner([key("k1")])
    with pytest.raises(InvalidToken):
        signer.verify(signer.sign(Claims("open", MESSAGE)), "unsubscribe")


def test_an_unknown_key_id_is_refused() -> None:
    token = TokenSigner([key("old")]).sign(CLICK)
    with pytest.raises(InvalidToken, match="unknown key"):
        TokenSigner([key("new")]).verify(token, "click")


def test_same_key_id_with_another_secret_is_refused() -> None:
    token = TokenSigner([key("k1", "a")]).sign(CLICK)
    with pytest.raises(InvalidToken, match="signature"):
        TokenSigner([key("k1", "b")]).verify(token, "click")


def test_rotation_the_newest_signs_and_old_mail_keeps_working() -> None:
    old_token = TokenSigner([key("2026-10", "a")]).sign(CLICK)
    rotated = TokenSigner([key("2026-11", "b"), key("2026-10", "a")])
    assert rotated.verify(old_token, "click") == CLICK
    new_token = rotated.sign(CLICK)
    assert new_token.startswith("2026-11.")
    with pytest.raises(InvalidToken):  # once the old key is retired, its tokens are dead
        TokenSigner([key("2026-11", "b")]).verify(old_token, "click")


def test_an_expired_token_is_refused_only_when_a_max_age_is_asked() -> None:
    signer = TokenSigner([key("k1")])
    token = signer.sign(Claims("open", MESSAGE))
    later = SENT_AT + timedelta(days=400)
    assert signer.verify(token, "open", later, None).message == MESSAGE
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(token, "open", later, timedelta(days=365))


@pytest.mark.parametrize("token", ["", "abc", "a.b", "k1..sig", "k1.!!!.x", "k1.e30.AAAA"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        TokenSigner([key("k1")]).verify(token, "open")


def test_keys_must_be_given_and_distinct() -> None:
    with pytest.raises(ValueError):
        TokenSigner([])
    with pytest.raises(ValueError):
        TokenSigner([key("k1"), key("k1", "x")])
