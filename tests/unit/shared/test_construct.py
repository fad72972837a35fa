"""ev.construct: model_construct for hot paths, with the defaults a validated model gets."""

from __future__ import annotations

from shared import events as ev


def test_constructed_equals_validated_and_defaults_are_not_shared() -> None:
    built = ev.construct(ev.Profile, key="s:c:1", shop_id="s", email=None)
    assert built == ev.Profile(key="s:c:1", shop_id="s", email=None)
    other = ev.construct(ev.Profile, key="s:c:2", shop_id="s", email=None)
    assert built.categories is not other.categories  # a fresh list each, as validation gives
