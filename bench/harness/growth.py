"""How a cost grows with the work, computed from measured points: the log-log slope of each
step (the elasticity: 1 means the cost grows in proportion to the work, 0 that it stays
flat), each step's class, and one generated sentence per curve saying whether it grows
linearly and where it bends. Nothing here knows the expected answer; the sentence comes from
the slopes alone."""

import math

# Log-log slope bands of a step. A step whose slope is within FLAT of 0 is flat, within
# LINEAR of 1 linear; between the two sublinear; above 1 + LINEAR superlinear; below -FLAT
# falling. 0.2 is wider than the run-to-run spread of these workloads on a noisy 2-core
# machine over a 10× step (a 20 % error changes a 10× step's slope by < 0.08), so a class
# change is a real bend, not noise.
FLAT = 0.2
LINEAR = 0.2


def slopes(xs, ys):
    """Per consecutive pair of points, the log-log slope, or None when a value is missing or
    not positive (no slope on a log scale)."""
    out = []
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if None in (x0, y0, x1, y1) or min(x0, y0, x1, y1) <= 0 or x0 == x1:
            out.append(None)
        else:
            out.append(math.log(y1 / y0) / math.log(x1 / x0))
    return out


def klass(s):
    """The class of one step's slope."""
    if s is None:
        return "unmeasured"
    if s < -FLAT:
        return "falling"
    if s <= FLAT:
        return "flat"
    if s < 1 - LINEAR:
        return "sublinear"
    if s <= 1 + LINEAR:
        return "linear"
    return "superlinear"


PHRASE = {
    "falling": "falls",
    "flat": "stays flat",
    "sublinear": "grows sublinearly",
    "linear": "grows linearly",
    "superlinear": "grows faster than linearly",
    "unmeasured": "has no measurable value",
}


def num(x):
    return f"{x:,.0f}" if x >= 1 else f"{x:g}"


def segments(xs, ys):
    """Runs of consecutive steps of one class: (class, x from, x to, [slopes])."""
    out = []
    for i, s in enumerate(slopes(xs, ys)):
        k = klass(s)
        if out and out[-1][0] == k:
            out[-1][2] = xs[i + 1]
            out[-1][3].append(s)
        else:
            out.append([k, xs[i], xs[i + 1], [s]])
    return out


def fmt_slopes(ss):
    return ", ".join("–" if s is None else f"{s:.2f}" for s in ss)


def describe(xs, ys, unit_x=""):
    """One clause: how ys grows with xs, where it bends and the slopes (points with a missing
    value are left out first)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if len(pts) < 2:
        return "has fewer than two measured points"
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    seg = segments(xs, ys)
    ss = slopes(xs, ys)
    u = f" {unit_x}" if unit_x else ""
    if len(seg) == 1:
        k, a, b, _ = seg[0]
        return f"{PHRASE[k]} from {num(a)} to {num(b)}{u} (log-log slope per step {fmt_slopes(ss)})"
    parts = [f"{PHRASE[k]} from {num(a)} to {num(b)}" for k, a, b, _ in seg]
    bends = ", ".join(num(b) for _, _, b, _ in seg[:-1])
    return (f"{', then '.join(parts)}{u}, bending at {bends}{u} "
            f"(log-log slope per step {fmt_slopes(ss)})")


def linear(xs, ys):
    """True when every measured step is linear (slope within LINEAR of 1)."""
    ss = [s for s in slopes(xs, ys) if s is not None]
    return bool(ss) and all(klass(s) == "linear" for s in ss)


def sentence(subject, series, unit_x=""):
    """One sentence for a curve with several series: `series` is [(name, xs, ys)]; per
    series, how it grows and where it bends."""
    clauses = [f"{name} {describe(xs, ys, unit_x)}" for name, xs, ys in series]
    if not clauses:
        return f"{subject}: no series measured."
    return f"{subject}: " + "; ".join(clauses) + "."
