"""Summary statistics and number formatting of the report: median, spread, table cells."""

import statistics


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def fmt(x, unit="", digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else (1 if abs(x) >= 10 else (2 if abs(x) >= 1 else 3))
    return f"{x:,.{digits}f}{unit}"


def cell(xs, unit="", digits=None):
    """median [min–max] (n)"""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = med(xs)
    if len(xs) == 1:
        return fmt(m, unit, digits)
    lo, hi = spread(xs)
    return f"{fmt(m, unit, digits)} [{fmt(lo, '', digits)}–{fmt(hi, '', digits)}]"
