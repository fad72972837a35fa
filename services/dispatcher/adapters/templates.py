"""Renders a step's templates in a Jinja2 sandbox: HTML (autoescaped), plain text, subject."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from services.dispatcher.domain.content import RenderedMessage, one_line
from shared.events import InvalidEvent

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]*")


class TemplateRenderer:
    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        self._files = SandboxedEnvironment(
            loader=FileSystemLoader(directory),
            autoescape=lambda name: name is not None and name.endswith(".html.j2"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._subjects = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

    def render(self, template: str, subject: str, context: dict[str, Any]) -> RenderedMessage:
        """Raises InvalidEvent for an unknown template or one this context cannot fill."""
        if not _TEMPLATE_NAME.fullmatch(template):
            raise InvalidEvent(f"invalid template name {template!r}")
        try:
            return RenderedMessage(
                subject=one_line(self._subjects.from_string(subject).render(context)),
                html=self._files.get_template(f"{template}.html.j2").render(context),
                text=self._files.get_template(f"{template}.txt.j2").render(context),
            )
        except TemplateNotFound as exc:
            raise InvalidEvent(f"unknown template {template!r} ({exc.name} missing)") from exc
        except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise InvalidEvent(f"template {template!r} cannot be rendered: {exc}") from exc
