"""The rules' state machine as an SVG drawing, made on the server (no script, no build).

Statuses sit on a circle in the rules' order; each allowed move is an arrow. Sync statuses
are outlined in blue, final ones grey, the initial one bold.
"""

from __future__ import annotations

import math
from html import escape

from syncd.rules.model import Rules

WIDTH, HEIGHT, RADIUS, BOX_W, BOX_H = 760, 560, 210, 120, 34


def svg(rules: Rules) -> str:
    """The drawing of `rules`' statuses and moves."""
    names = list(rules.statuses)
    cx, cy = WIDTH / 2, HEIGHT / 2
    at = {
        name: (
            cx + RADIUS * 1.35 * math.cos(2 * math.pi * i / len(names) - math.pi / 2),
            cy + RADIUS * math.sin(2 * math.pi * i / len(names) - math.pi / 2),
        )
        for i, name in enumerate(names)
    }
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="state machine of {escape(rules.source)}">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' "
        "markerWidth='7' markerHeight='7' orient='auto-start-reverse'>"
        "<path d='M0,0 L10,5 L0,10 z' fill='#555'/></marker></defs>",
    ]
    for source, targets in rules.moves.items():
        for target in targets:
            parts.append(_arrow(at[source], at[target]))
    synced = set(rules.sync.on) | set(rules.sync.send_on)
    for name, (x, y) in at.items():
        stroke = "#1f6feb" if name in synced else "#555"
        fill = "#eee" if name in rules.final else "#fff"
        weight = "bold" if name == rules.initial else "normal"
        parts.append(
            f"<g class='status' data-status='{escape(name)}'>"
            f"<rect x='{x - BOX_W / 2:.1f}' y='{y - BOX_H / 2:.1f}' width='{BOX_W}' "
            f"height='{BOX_H}' rx='8' fill='{fill}' stroke='{stroke}' stroke-width='2'/>"
            f"<text x='{x:.1f}' y='{y + 5:.1f}' text-anchor='middle' font-family='sans-serif' "
            f"font-size='14' font-weight='{weight}'>{escape(name)}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _arrow(a: tuple[float, float], b: tuple[float, float]) -> str:
    """A slightly bent arrow from box a to box b, ending at b's edge."""
    (x1, y1), (x2, y2) = a, b
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    ux, uy = dx / length, dy / length
    edge = min(BOX_W / 2 / (abs(ux) or 1e-9), BOX_H / 2 / (abs(uy) or 1e-9))
    sx, sy = x1 + ux * edge, y1 + uy * edge
    ex, ey = x2 - ux * edge, y2 - uy * edge
    mx, my = (sx + ex) / 2 - uy * 18, (sy + ey) / 2 + ux * 18  # bent: a→b and b→a apart
    return (
        f"<path class='move' d='M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}' "
        "fill='none' stroke='#555' stroke-width='1.4' marker-end='url(#arrow)'/>"
    )
