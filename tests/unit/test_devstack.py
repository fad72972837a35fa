"""`make run` wires tracked mail: the dispatcher's links point at the local ingest, which
accepts the tokens the dispatcher signs."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import devstack
import pytest

from services.dispatcher.settings import DispatcherSettings
from services.ingest.settings import IngestSettings
from shared.tracking import Claims, MessageRef, TokenSigner

PG = cast(devstack.Postgres, SimpleNamespace(url="postgresql+asyncpg://rebound@127.0.0.1:1/x"))


def _environment(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REBOUND_"):
            monkeypatch.delenv(name)
    for name, value in devstack.service_env(service, PG).items():
        if name.startswith("REBOUND_"):
            monkeypatch.setenv(name, value)


def test_make_run_mail_is_tracked_through_the_local_ingest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with monkeypatch.context() as env:
        _environment("ingest", env)
        ingest = IngestSettings()
    with monkeypatch.context() as env:
        _environment("dispatcher", env)
        dispatcher = DispatcherSettings()
    [shop] = dispatcher.shops
    assert shop.tracking and shop.public_base_url == f"http://127.0.0.1:{ingest.http_port}"
    assert shop.shop_id in {s.shop_id for s in ingest.shops}
    sent_at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    ref = MessageRef(shop.shop_id, "demo:c:1", "rk", "abandoned-cart", "reminder", sent_at)
    token = TokenSigner(dispatcher.tracking_keys).sign(Claims("unsubscribe", ref))
    assert TokenSigner(ingest.tracking_keys).verify(token, "unsubscribe").message == ref
