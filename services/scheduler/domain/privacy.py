"""When a privacy request is done, and what an export document looks like: pure rules.

A request is complete only when every service (ingest, scheduler, dispatcher) answered it:
an erasure when each confirmed, an export when each sent its part.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from shared.events import PRIVACY_SERVICES


def missing(answered: Collection[str]) -> list[str]:
    """The services that have not answered yet, in a stable order."""
    return [service for service in PRIVACY_SERVICES if service not in answered]


def is_complete(answered: Collection[str]) -> bool:
    return not missing(answered)


def export_document(
    request_id: str,
    shop_id: str,
    requested_at: datetime,
    platform_request_id: str | None,
    parts: Mapping[str, Any],
) -> dict[str, Any]:
    """One JSON document: every service's part, in service order."""
    return {
        "request_id": request_id,
        "shop_id": shop_id,
        "platform_request_id": platform_request_id,
        "requested_at": requested_at.isoformat(),
        "services": {service: parts.get(service, {}) for service in PRIVACY_SERVICES},
    }
