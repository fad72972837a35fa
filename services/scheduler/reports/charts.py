"""Charts for the dashboard as inline SVG, drawn on the server: no script, no chart library,
nothing fetched by the browser (shops run Rebound behind firewalls). Every text is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from services.scheduler.reports.schemas import Funnel, HoldoutLift, SegmentSize, SizeOnDay

WIDTH = 360
BAR_H = 22
LABEL_W = 110
INK = "#1f2937"
BAR = "#2563eb"
HOLDOUT = "#9ca3af"


def funnel_chart(funnel: Funnel) -> Markup:
    """Horizontal bars: requested, sent, opened (human), clicked, converted."""
    stages = [
        ("requested", funnel.requested),
        ("sent", funnel.sent),
        ("opened", funnel.human_opens),
        ("clicked", funnel.clicks),
        ("converted", funnel.conversions),
    ]
    return bars(stages, "message funnel")


def lift_chart(lift: HoldoutLift) -> Markup:
    """Conversion of treatment and holdout as bars, and the lift as a bar from zero with its
    95% interval as error bars, on one axis in percentage points."""
    interval = lift.absolute_lift
    values = [lift.treatment.conversion_rate, lift.holdout.conversion_rate]
    if interval is not None:
        values += [interval.low, interval.high, interval.estimate]
    low, high = min(0.0, *values), max(0.0, *values)
    scale = (WIDTH - LABEL_W - 70) / ((high - low) or 1)

    def x(value: float) -> float:
        return LABEL_W + (value - low) * scale

    rates = (lift.treatment.conversion_rate, lift.holdout.conversion_rate)
    rows = [
        _bar(0, "treatment", x(0), x(rates[0]), BAR),
        _bar(1, "holdout", x(0), x(rates[1]), HOLDOUT),
        _value(0, x(max(0.0, rates[0])), f"{rates[0] * 100:.1f}%"),
        _value(1, x(max(0.0, rates[1])), f"{rates[1] * 100:.1f}%"),
    ]
    if interval is not None:
        rows.append(_bar(2, "lift", x(0), x(interval.estimate), "#16a34a"))
        rows.append(_error_bar(2, x(interval.low), x(interval.high)))
        rows.append(_value(2, x(max(0.0, interval.high)), f"{interval.estimate * 100:+.1f} pts"))
    zero = x(0)
    axis = f'<line x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{3 * 34}" stroke="{INK}"/>'
    return _svg(3 * 34 + 4, axis + "".join(rows), "holdout lift with its 95% interval")


def _bar(row: int, label: str, x0: float, x1: float, colour: str) -> str:
    y = row * 34 + 6
    left, width = min(x0, x1), abs(x1 - x0)
    return (
        f'<text x="0" y="{y + 15}" fill="{INK}" font-size="12">{escape(label)}</text>'
        f'<rect x="{left:.1f}" y="{y}" width="{max(width, 1):.1f}" height="{BAR_H}" '
        f'fill="{colour}" rx="2"/>'
    )


def _value(row: int, x: float, text: str) -> str:
    return (
        f'<text x="{x + 4:.1f}" y="{row * 34 + 21}" fill="{INK}" font-size="11">'
        f"{escape(text)}</text>"
    )


def _error_bar(row: int, x_low: float, x_high: float) -> str:
    y = row * 34 + 6 + BAR_H / 2
    return (
        f'<g stroke="{INK}" stroke-width="1.5" class="error-bar">'
        f'<line x1="{x_low:.1f}" y1="{y}" x2="{x_high:.1f}" y2="{y}"/>'
        f'<line x1="{x_low:.1f}" y1="{y - 7}" x2="{x_low:.1f}" y2="{y + 7}"/>'
        f'<line x1="{x_high:.1f}" y1="{y - 7}" x2="{x_high:.1f}" y2="{y + 7}"/></g>'
    )


def heat(share: float) -> str:
    """A cohort cell's background: white at 0, deep blue at 50% or more returning."""
    strength = min(1.0, share / 0.5)
    red, green = round(255 - 218 * strength), round(255 - 156 * strength)
    return f"rgb({red},{green},235)" if strength else "#ffffff"


def heat_ink(share: float) -> str:
    return "#ffffff" if share >= 0.3 else INK


def bars(items: Sequence[tuple[str, int]], label: str) -> Markup:
    """Simple horizontal bars for sizes (segments, stages)."""
    top = max((n for _, n in items), default=0) or 1
    span = WIDTH - LABEL_W - 50
    rows = []
    for i, (name, n) in enumerate(items):
        y = i * (BAR_H + 6)
        w = span * n / top
        rows.append(
            f'<text x="0" y="{y + 15}" fill="{INK}" font-size="12">{escape(name)}</text>'
            f'<rect x="{LABEL_W}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{BAR}" rx="2"/>'
            f'<text x="{LABEL_W + w + 4:.1f}" y="{y + 15}" fill="{INK}" font-size="12">{n}</text>'
        )
    return _svg(max(1, len(items)) * (BAR_H + 6), "".join(rows), label)


def sizes(items: Sequence[SegmentSize], label: str) -> Markup:
    return bars([(s.name, s.customers) for s in items], label)


def trend(days: Sequence[SizeOnDay], label: str) -> Markup:
    """A small line of daily sizes (a sparkline): the first and last day under it."""
    height, pad = 60.0, 4.0
    if not days:
        return _svg(height, "", label)
    low = min(d.size for d in days)
    high = max(d.size for d in days)
    step = (WIDTH - 2 * pad) / max(1, len(days) - 1)

    def y(size: int) -> float:
        return height - 18 - (size - low) / ((high - low) or 1) * (height - 18 - pad)

    points = " ".join(f"{pad + i * step:.1f},{y(d.size):.1f}" for i, d in enumerate(days))
    body = (
        f'<polyline points="{points}" fill="none" stroke="{BAR}" stroke-width="2"/>'
        f'<text x="{pad}" y="{height - 2}" fill="{INK}" font-size="11">{days[0].day}</text>'
        f'<text x="{WIDTH - pad}" y="{height - 2}" fill="{INK}" font-size="11" '
        f'text-anchor="end">{days[-1].day}</text>'
    )
    return _svg(height, body, label)


def distribution(counts: Sequence[int], label: str) -> Markup:
    """Customers per P(alive) bucket of 0.1, as vertical bars from 0 to 1."""
    height, base = 90.0, 72.0
    top = max(counts, default=0) or 1
    width = WIDTH / max(1, len(counts))
    rows = []
    for i, n in enumerate(counts):
        h = (base - 4) * n / top
        rows.append(
            f'<rect x="{i * width + 1:.1f}" y="{base - h:.1f}" width="{width - 2:.1f}" '
            f'height="{max(h, 0.5):.1f}" fill="{BAR}"><title>{i / 10:.1f}-{(i + 1) / 10:.1f}: '
            f"{n}</title></rect>"
        )
    axis = (
        f'<text x="0" y="{height - 2}" fill="{INK}" font-size="11">P(alive) 0</text>'
        f'<text x="{WIDTH}" y="{height - 2}" fill="{INK}" font-size="11" text-anchor="end">1</text>'
    )
    return _svg(height, "".join(rows) + axis, label)


def _svg(height: float, body: str, label: str) -> Markup:
    return Markup(
        f'<svg viewBox="0 0 {WIDTH} {height:.0f}" role="img" aria-label="{escape(label)}" '
        f'preserveAspectRatio="xMinYMin meet" class="chart">{body}</svg>'
    )
