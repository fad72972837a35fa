"""Renders a step's templates in a Jinja2 sandbox: HTML (autoescaped), plain text, subject.

Each template (the subject line too) is compiled once per process and kept: compiling costs
far more than rendering.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    meta,
)
from jinja2.sandbox import SandboxedEnvironment

from services.dispatcher.domain.content import RenderedMessage, one_line
from shared.events import InvalidEvent

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
_TEMPLATE_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]*")
# Subject lines come inside requests; journeys hold a few each, so this bound is never reached
# in practice, but a stream of distinct subjects cannot grow memory without limit.
MAX_CACHED_SUBJECTS = 1024


class _Sandbox(SandboxedEnvironment):
    """The sandbox's attribute check, remembered per (type, name): Jinja2's rule depends on
    nothing else, and it was a third of the rendering time."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._safe: dict[tuple[type, str], bool] = {}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        safe = self._safe.get(key)
        if safe is None:
            if len(self._safe) >= MAX_CACHED_SUBJECTS:  # names come from request subjects too
                self._safe.clear()
            safe = self._safe[key] = super().is_safe_attribute(obj, attr, value)
        return safe


class TemplateRenderer:
    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        self._files = _Sandbox(
            loader=FileSystemLoader(directory),
            autoescape=lambda name: name is not None and name.endswith(".html.j2"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._subjects_env = _Sandbox(undefined=StrictUndefined, autoescape=False)
        self._subjects: dict[str, Template] = {}
        self._bodies: dict[str, tuple[Template, Template]] = {}
        self._reads: dict[str, frozenset[str]] = {}

    def render(self, template: str, subject: str, context: dict[str, Any]) -> RenderedMessage:
        """Raises InvalidEvent for an unknown template or one this context cannot fill."""
        try:
            html, text = self._bodies.get(template) or self._load(template)
            return RenderedMessage(
                subject=one_line(self._subject(subject).render(context)),
                html=html.render(context),
                text=text.render(context),
            )
        except InvalidEvent:
            raise
        except TemplateNotFound as exc:
            raise InvalidEvent(f"unknown template {template!r} ({exc.name} missing)") from exc
        except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise InvalidEvent(f"template {template!r} cannot be rendered: {exc}") from exc

    def uses(self, template: str, name: str) -> bool:
        """Whether the template (or a file it includes) reads `name`: the dispatcher looks
        products up only for mail that shows them. An unknown template reads nothing."""
        known = self._reads.get(template)
        if known is None:
            try:
                known = self._reads[template] = self._names_read(template)
            except (InvalidEvent, TemplateError):
                return False
        return name in known

    def _names_read(self, template: str) -> frozenset[str]:
        if not _TEMPLATE_NAME.fullmatch(template):
            raise InvalidEvent(f"invalid template name {template!r}")
        names: set[str] = set()
        pending = [f"{template}.html.j2", f"{template}.txt.j2"]
        seen: set[str] = set()
        while pending:
            file = pending.pop()
            if file in seen:
                continue
            seen.add(file)
            loader = self._files.loader
            assert loader is not None
            source, _, _ = loader.get_source(self._files, file)
            parsed = self._files.parse(source)
            names |= meta.find_undeclared_variables(parsed)
            pending.extend(f for f in meta.find_referenced_templates(parsed) if f is not None)
        return frozenset(names)

    def _load(self, template: str) -> tuple[Template, Template]:
        if not _TEMPLATE_NAME.fullmatch(template):
            raise InvalidEvent(f"invalid template name {template!r}")
        pair = (
            self._files.get_template(f"{template}.html.j2"),
            self._files.get_template(f"{template}.txt.j2"),
        )
        self._bodies[template] = pair
        return pair

    def _subject(self, source: str) -> Template:
        compiled = self._subjects.get(source)
        if compiled is None:
            if len(self._subjects) >= MAX_CACHED_SUBJECTS:
                self._subjects.clear()
            compiled = self._subjects[source] = self._subjects_env.from_string(source)
        return compiled
