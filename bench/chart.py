#!/usr/bin/env python3
"""Draws bench/charts/against-floor.svg from bench/headline.json: for each figure measured
beside the floor server (and Nchan, where it was) in the same sittings, how many times
better notify did in each run (the other = 1): the median run as a bar, the lowest and
highest as whiskers.

    python3 bench/chart.py           (re)draw the chart
    python3 bench/chart.py --check   fail if the committed chart differs from the figures,
                                     or a link of BENCHMARKS.md names no section of it
"""
import json
import re
import sys
from html import escape
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "headline.json"
CHART = HERE / "charts" / "against-floor.svg"

WIDTH, ROW, LEFT, TOP = 1020, 34, 370, 40


def advantages(figure, runs="runs"):
    """Each run's notify figure as a multiple of the other server's, larger is better either way."""
    if figure["better"] == "higher":
        return sorted(notify / other for notify, other in figure[runs])
    return sorted(other / notify for notify, other in figure[runs])


def bars(figure):
    """(label, colour, ratios) for each server measured beside notify."""
    out = [("floor", "#3a6ee8", advantages(figure))]
    if "nchan_runs" in figure:
        out.append(("Nchan", "#e8833a", advantages(figure, "nchan_runs")))
    return out


def median(values):
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def draw(figures):
    rows = [(f, name, colour, ratios) for f in figures for name, colour, ratios in bars(f)]
    scale_max = max(1.0, max(max(r) for *_, r in rows)) * 1.15
    span = WIDTH - LEFT - 240
    x = lambda value: LEFT + span * value / scale_max
    height = TOP + ROW * len(rows) + 74
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="system-ui, sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        '<text x="10" y="22" font-size="15" font-weight="600" fill="#1d2330">'
        "notify against the floor server and Nchan, same sittings (the other = 1×, longer is better)</text>",
    ]
    for i, (figure, name, colour, ratios) in enumerate(rows):
        y = TOP + i * ROW
        mid, low, high = median(ratios), ratios[0], ratios[-1]
        label = f'{figure["label"]} vs {name} ({figure["date"]})'
        out.append(f'<text x="{LEFT - 10}" y="{y + 20}" text-anchor="end" fill="#1d2330">{escape(label)}</text>')
        out.append(f'<rect x="{LEFT}" y="{y + 6}" width="{x(mid) - LEFT:.1f}" height="20" fill="{colour}" rx="3"/>')
        out.append(f'<line x1="{x(low):.1f}" y1="{y + 16}" x2="{x(high):.1f}" y2="{y + 16}" stroke="#1d2330"/>')
        for end in (low, high):
            out.append(f'<line x1="{x(end):.1f}" y1="{y + 10}" x2="{x(end):.1f}" y2="{y + 22}" stroke="#1d2330"/>')
        runs = len(ratios)
        text = f"{mid:.2f}×" if low == high else f"{mid:.2f}× ({low:.2f}–{high:.2f}, {runs} runs)"
        out.append(f'<text x="{x(high) + 6:.1f}" y="{y + 20}" fill="#1d2330">{text}</text>')
    even_x = x(1.0)
    bottom = TOP + ROW * len(rows)
    out.append(f'<line x1="{even_x:.1f}" y1="{TOP}" x2="{even_x:.1f}" y2="{bottom + 4}" stroke="#b3261e" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{even_x:.1f}" y="{bottom + 20}" text-anchor="middle" fill="#b3261e">even</text>')
    out.append(f'<text x="10" y="{bottom + 44}" fill="#5b6475">Bars: the median run (blue against the floor, '
               "orange against Nchan); whiskers: the lowest and highest.</text>")
    out.append(f'<text x="10" y="{bottom + 62}" fill="#5b6475">Source: bench/headline.json, drawn by bench/chart.py.</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def slug(heading):
    """A heading's anchor, as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def broken_links(markdown):
    anchors = {slug(line.lstrip("#")) for line in markdown.splitlines() if line.startswith("#")}
    return [a for a in re.findall(r"\]\(#([^)]+)\)", markdown) if a not in anchors]


def main():
    figures = json.loads(SOURCE.read_text())["against_floor"]
    svg = draw(figures)
    if "--check" in sys.argv:
        if not CHART.exists() or CHART.read_text() != svg:
            sys.exit(f"{CHART.relative_to(HERE.parent)} is not drawn from {SOURCE.name}: run python3 bench/chart.py")
        broken = broken_links((HERE.parent / "BENCHMARKS.md").read_text())
        if broken:
            sys.exit(f"BENCHMARKS.md links to sections it does not have: {broken}")
        return
    CHART.parent.mkdir(exist_ok=True)
    CHART.write_text(svg)


if __name__ == "__main__":
    main()
