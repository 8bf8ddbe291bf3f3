"""The medical profile's measurements as server-rendered SVG charts (no script: the CSP allows none).

Each series is one LOINC code (a blood-pressure panel gives two: systolic and diastolic), drawn as
a line over time with its range and last value, and told in words to screen readers (the SVG's
``aria-label``); the page also gives the same values as a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from carnet.web.views import fmt_date, parse_instant

WIDTH, HEIGHT, PAD = 640, 220, 44
COMPONENTS = {"8480-6": ("Systolique", "Systolic"), "8462-4": ("Diastolique", "Diastolic")}


@dataclass
class Series:
    code: str
    label: str
    unit: str
    points: list[tuple[datetime, float, str]] = field(default_factory=list)  # (when, value, iso date)


def _label(obs: dict[str, Any]) -> str:
    concept = obs.get("code") or {}
    coding = (concept.get("coding") or [{}])[0]
    return str(concept.get("text") or coding.get("display") or coding.get("code") or "")


def series_of(observations: list[dict[str, Any]], lang: str) -> list[Series]:
    """The numeric series among Observations, in order of first appearance, points by date."""
    i = 1 if lang == "en" else 0
    found: dict[str, Series] = {}

    def add(code: str, label: str, quantity: dict[str, Any] | None, when: str | None) -> None:
        moment = parse_instant(when)
        if not quantity or moment is None or not isinstance(quantity.get("value"), int | float):
            return
        series = found.setdefault(code, Series(code, label, str(quantity.get("unit") or "")))
        series.points.append((moment.replace(tzinfo=None), float(quantity["value"]), str(when)))

    for obs in observations:
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        code = str(((obs.get("code") or {}).get("coding") or [{}])[0].get("code") or "")
        when = obs.get("effectiveDateTime") or (obs.get("effectivePeriod") or {}).get("start")
        if "valueQuantity" in obs:
            add(code, _label(obs), obs["valueQuantity"], when)
        for part in obs.get("component") or []:
            part_code = str(((part.get("code") or {}).get("coding") or [{}])[0].get("code") or "")
            name = COMPONENTS.get(part_code, (_label(part),) * 2)[i]
            add(part_code, f"{_label(obs)} — {name}", part.get("valueQuantity"), when)
    for series in found.values():
        series.points.sort(key=lambda p: p[0])
    return list(found.values())


def number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def describe(series: Series, lang: str) -> str:
    values = [v for _, v, _ in series.points]
    last_when, last_value = series.points[-1][2], series.points[-1][1]
    low, high = number(min(values)), number(max(values))
    if lang == "en":
        return (
            f"{series.label}: {len(values)} measurements, from {low} to {high} {series.unit}; "
            f"the latest {number(last_value)} {series.unit} on {fmt_date(last_when, lang)}"
        )
    return (
        f"{series.label} : {len(values)} mesures, de {low} à {high} {series.unit} ; "
        f"la dernière {number(last_value)} {series.unit} le {fmt_date(last_when, lang)}"
    )


def svg(series: Series, lang: str) -> Markup:
    """A line chart of one series (time on x, value on y), with its extremes and dates as text."""
    values = [v for _, v, _ in series.points]
    times = [p[0].timestamp() for p in series.points]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1
    first, last = min(times), max(times)
    span = (last - first) or 1.0

    def x(t: float) -> float:
        return PAD + (t - first) / span * (WIDTH - 2 * PAD) if last > first else WIDTH / 2

    def y(v: float) -> float:
        return HEIGHT - PAD - (v - low) / (high - low) * (HEIGHT - 2 * PAD)

    coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values, strict=True))
    dots = "".join(
        f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="#000091"/>'
        for t, v in zip(times, values, strict=True)
    )
    label = escape(describe(series, lang))
    unit = escape(series.unit)
    start, end = escape(fmt_date(series.points[0][2], lang)), escape(fmt_date(series.points[-1][2], lang))
    return Markup(  # noqa: S704 - every interpolated value is escaped above or a number formatted here
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#4a4a4a"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#4a4a4a"/>'
        f'<text x="{PAD - 6}" y="{PAD + 4}" text-anchor="end" font-size="12" fill="#161616">'
        f"{escape(number(max(values)))}</text>"
        f'<text x="{PAD - 6}" y="{HEIGHT - PAD + 4}" text-anchor="end" font-size="12" fill="#161616">'
        f"{escape(number(min(values)))}</text>"
        f'<text x="{PAD}" y="{HEIGHT - PAD + 20}" font-size="12" fill="#161616">{start}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 20}" text-anchor="end" font-size="12" '
        f'fill="#161616">{end}</text>'
        f'<text x="{PAD}" y="{PAD - 14}" font-size="12" fill="#161616">{unit}</text>'
        f'<polyline points="{coords}" fill="none" stroke="#000091" stroke-width="2"/>{dots}</svg>'
    )
