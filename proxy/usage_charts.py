"""The geometry of the usage page's charts, drawn as inline SVG by the template (no script, no
style attribute: shapes carry their size as SVG attributes and their colour as a CSS class).

A chart is a plot box with the largest value at its top, zero at its bottom, and the first and
last bucket's start under it. Bars stack their parts bottom up (calls: answered, then failed);
lines join the buckets that have a value and break over those that have none."""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 720, 170
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 8, 22  # room for the axis labels
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
BAR_SHARE = 0.72  # of a bucket's width; the rest is the gap between bars


@dataclass(frozen=True)
class Shape:
    kind: str  # "rect", "polyline" or "circle": the SVG element
    css: str  # its class (colour)
    attributes: dict  # its SVG geometry
    title: str = ""  # shown on hover


@dataclass
class Chart:
    top: int  # the largest value: the plot's top
    unit: str
    first: str  # the first bucket's label, under the plot's left
    last: str  # the last bucket's label, under the plot's right
    shapes: list[Shape] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    plot_top: int = TOP
    plot_bottom: int = TOP + PLOT_HEIGHT
    right: int = WIDTH - RIGHT

    @property
    def top_label(self) -> str:
        """The largest value, short enough for the room left of the plot (12.3k, 4.5M)."""
        if self.top < 10_000:
            return str(self.top)
        for divisor, suffix in ((1_000, "k"), (1_000_000, "M")):
            if (shown := round(self.top / divisor, 1)) < 1000:
                return f"{shown:g}{suffix}"
        return f"{round(self.top / 1_000_000_000, 1):g}G"


def stacked_bars(
    labels: list[str], stacks: list[tuple[int, ...]], classes: tuple[str, ...], unit: str
) -> Chart:
    """One bar per bucket, its parts (e.g. answered, failed calls) stacked bottom up."""
    top = max((sum(stack) for stack in stacks), default=0)
    chart = Chart(top=top, unit=unit, first=labels[0], last=labels[-1])
    slot = PLOT_WIDTH / len(labels)
    for number, (label, stack) in enumerate(zip(labels, stacks, strict=True)):
        floor = TOP + PLOT_HEIGHT
        title = f"{label}: " + ", ".join(
            f"{value} {css}" for value, css in zip(stack, classes, strict=True)
        )
        for value, css in zip(stack, classes, strict=True):
            if not value:
                continue
            height = value / top * PLOT_HEIGHT
            floor -= height
            x = LEFT + number * slot + slot * (1 - BAR_SHARE) / 2
            attributes = {"x": x, "y": floor, "width": slot * BAR_SHARE, "height": height}
            chart.shapes.append(Shape("rect", css, _rounded(attributes), title))
    return chart


def lines(labels: list[str], series: dict[str, list[int | None]], unit: str) -> Chart:
    """One line per series (its key is the line's class) through each bucket's value; a bucket
    without a value (None) breaks the line; each value is a dot on it."""
    top = max((v for values in series.values() for v in values if v is not None), default=0)
    chart = Chart(top=top, unit=unit, first=labels[0], last=labels[-1])
    slot = PLOT_WIDTH / len(labels)
    for css, values in series.items():
        run: list[tuple[float, float, str]] = []
        for number, (label, value) in enumerate([*zip(labels, values, strict=True), ("", None)]):
            if value is not None:
                y = TOP + PLOT_HEIGHT - (value / top * PLOT_HEIGHT if top else 0)
                run.append((LEFT + (number + 0.5) * slot, y, f"{label}: {css} {value} {unit}"))
                continue
            chart.shapes.extend(_line_of(run, css))
            run = []
    return chart


def _line_of(run: list[tuple[float, float, str]], css: str) -> list[Shape]:
    """A polyline through the run's points, and a dot on each (its value shown on hover)."""
    shapes = []
    if len(run) > 1:
        points = " ".join(f"{round(x, 1):g},{round(y, 1):g}" for x, y, _ in run)
        shapes.append(Shape("polyline", css, {"points": points}))
    for x, y, title in run:
        shapes.append(Shape("circle", css, _rounded({"cx": x, "cy": y, "r": 2.5}), title))
    return shapes


def _rounded(attributes: dict) -> dict:
    return {name: f"{round(value, 1):g}" for name, value in attributes.items()}
