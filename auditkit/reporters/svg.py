"""Building blocks for scorecard sections (the ``auditkit_scorecard_sections`` hook): inline SVG
line charts, embedded PNG images, figures, galleries and tables, all returned as HTML strings
built from escaped values, so a section stays self-contained and safe whatever its labels say.

Everything here is deterministic: the same input gives byte-identical output (no random ids,
no timestamps, coordinates rounded to fixed decimals), so scorecards can be diffed. The one
context charts read is the scorecard's list of weak baselines (:func:`weak_models`), whose
series they mark.

Example, in a plugin's section hook::

    from auditkit.reporters import svg

    chart = svg.line_chart(
        [{"label": "target", "x": [1, 2, 4], "y": [0.9, 0.7, 0.4], "lo": [...], "hi": [...]}],
        x_label="epsilon (x 1/255)", y_label="robust accuracy", title="PGD, Linf",
    )
    html = svg.figure(chart, "robust accuracy against epsilon, 95% intervals")
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import html
import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "PALETTE",
    "artifact_html",
    "figure",
    "format_budget",
    "format_number",
    "gallery",
    "image_tag",
    "line_chart",
    "model_colors",
    "model_order",
    "model_styles",
    "not_run_note",
    "outcome_badge",
    "plural",
    "table",
    "weak_models",
]

# Okabe & Ito's colour-blind-safe palette (yellow left out: unreadable on white). Dash patterns
# and marker shapes cycle with other periods, so every model's line differs from the others' in
# three ways: lines that lie on top of each other, or print in greyscale, stay apart. The first
# model (the user's) is solid with round markers; "4 3" is left to the controls (random order,
# random noise) the plugins draw beside a model's line.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "8 4", "2 3", "8 3 2 3")
MARKERS = ("circle", "square", "triangle", "diamond", "triangle-down")

# Weak baselines (they did not learn the task) of the scorecard being rendered: charts mark
# their series. Set by the scorecard around the section hooks (:func:`weak_models`), so every
# plugin's charts mark them without knowing about it.
_WEAK_MODELS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("auditkit_weak_models", default=frozenset())
WEAK_SUFFIX = " (weak baseline)"

BAND_OPACITY = 0.08  # light: where the bands of several models overlap, each stays readable
_FONT = 12
_CHAR_W = 6.6  # average glyph width of a 12 px sans-serif face, for laying out legends


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML/SVG elements and quoted attributes. Objects with
    ``__html__`` (markupsafe.Markup) are trusted and returned as they are."""
    if hasattr(value, "__html__"):
        return value.__html__()
    return html.escape(str(value), quote=True)


def format_number(value: Any, digits: int = 3) -> str:
    """A number as a person reads it in a table: integers as integers, ``digits`` decimals
    below 10 (fewer above), scientific notation for tiny and huge values, ``nan``, ``inf``,
    and an en dash for a missing value."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "\u221e" if v > 0 else "\u2212\u221e"
    if v.is_integer() and abs(v) < 1e9:
        return str(int(v))
    a = abs(v)
    if a < 10 ** -digits or a >= 1e6:
        return f"{v:.{max(digits - 1, 1)}e}"
    if a < 10:
        return f"{v:.{digits}f}"
    if a < 100:
        return f"{v:.{max(digits - 1, 0)}f}"
    if a < 1000:
        return f"{v:.{max(digits - 2, 0)}f}"
    return f"{v:.0f}"


def plural(count: Any, word: str, words: str | None = None) -> str:
    """``count`` and the noun agreeing with it: ``1 epoch``, ``2 epochs``, ``0 epochs``
    (``words``: an irregular plural)."""
    number = format_number(count)
    try:
        one = float(count) == 1
    except (TypeError, ValueError):
        one = False
    return f"{number} {word if one else (words or word + 's')}"


def format_budget(norm: Any, eps: Any) -> str:
    """A perturbation budget as a person reads it: an Linf budget of whole 8-bit grey levels
    as ``8/255``, any other to four significant digits (``0.5``, ``0.01``); text (``"8/255"``)
    as it is."""
    if isinstance(eps, str) or eps is None:
        return "\u2013" if eps is None else eps
    try:
        value = float(eps)
    except (TypeError, ValueError):
        return str(eps)
    levels = value * 255
    if str(norm or "linf") == "linf" and round(levels) >= 1 and abs(levels - round(levels)) < 1e-6:
        return f"{round(levels)}/255"
    return f"{value:.4g}"


# -------------------------------------------------------------------------------------------
# images
# -------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_tag(png_bytes: bytes, alt: str, *, css_class: str | None = None) -> str:
    """An ``<img>`` with the PNG embedded as a data URI (the page stays one offline file).
    ``width``/``height`` come from the PNG header, so the layout does not jump while loading.

    :param png_bytes: the PNG file's bytes.
    :param alt: the text alternative (escaped).
    :raises TypeError: ``png_bytes`` is not bytes.
    """
    if not isinstance(png_bytes, (bytes, bytearray, memoryview)):
        raise TypeError(f"image_tag expects PNG bytes, got {type(png_bytes).__name__}")
    data = bytes(png_bytes)
    size = ""
    if data[:8] == _PNG_SIGNATURE and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        size = f' width="{width}" height="{height}"'
    cls = f' class="{esc(css_class)}"' if css_class else ""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{esc(alt)}"{size}{cls}>'


def figure(body: str, caption: str = "", *, css_class: str = "artifact") -> str:
    """Wrap trusted HTML ``body`` (a chart, an image) in a ``<figure>`` with an escaped caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure class="{esc(css_class)}">{body}{cap}</figure>'


def gallery(items: Iterable[str], *, css_class: str = "gallery") -> str:
    """Figures (trusted HTML strings) laid out in a wrapping row; empty string for no items."""
    items = [i for i in items if i]
    if not items:
        return ""
    return f'<div class="{esc(css_class)}">' + "".join(items) + "</div>"


# -------------------------------------------------------------------------------------------
# tables and small pieces
# -------------------------------------------------------------------------------------------


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], *, caption: str = "", digits: int = 3) -> str:
    """An HTML table. Cells that are numbers go through :func:`format_number` and are right
    aligned; strings are escaped; objects with ``__html__`` are inserted as they are.

    :param headers: column headings (empty for a table without a header row).
    :param rows: one sequence of cells per row.
    """
    out = ['<div class="table-wrap"><table>']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    if headers:
        out.append("<thead><tr>" + "".join(f'<th scope="col">{esc(h)}</th>' for h in headers) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = []
        for cell in row:
            if isinstance(cell, (int, float)) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{esc(format_number(cell, digits))}</td>')
            elif cell is None:
                cells.append('<td class="num">\u2013</td>')
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def outcome_badge(outcome: Any) -> str:
    """A coloured word for a check outcome (``passed``, ``failed``, ...); the word itself
    carries the meaning, the colour only helps."""
    word = getattr(outcome, "value", outcome)
    word = str(word)
    return f'<span class="badge {esc(word)}">{esc(word)}</span>'


def model_order(results: Iterable[Any]) -> list[str]:
    """Model names of ``results``: the target(s) first, then baselines in order of appearance."""
    seen: dict[str, str] = {}
    for r in results:
        seen.setdefault(r.model, getattr(r, "role", "target"))
    return [m for m, role in seen.items() if role == "target"] + [m for m, role in seen.items() if role != "target"]


def by_model(results: Iterable[Any], models: Sequence[str]) -> list[Any]:
    """``results`` (one per model) in the order of ``models``."""
    found = {r.model: r for r in results}
    return [found[m] for m in models if m in found]


def ran(result: Any) -> bool:
    """Whether a result has numbers to show (it passed or failed, rather than skipped or errored)."""
    return result.outcome in ("passed", "failed")


def check_results(results: Sequence[Any], check: str) -> tuple[list[str], list[Any], list[Any]]:
    """For one check's section: every model of the scorecard in :func:`model_order`, that
    check's results in the same order, and those of them that ran (passed or failed)."""
    models = model_order(results)
    ordered = by_model((r for r in results if r.check == check), models)
    return models, ordered, [r for r in ordered if ran(r)]


def with_interval(metrics: Any, name: str, lo: str, hi: str) -> str:
    """``metrics[name]`` formatted, followed by ``[low, high]`` when the metrics ``name + lo``
    and ``name + hi`` exist; an en dash when ``name`` is missing."""
    value = metrics.get(name)
    if value is None:
        return "\u2013"
    low, high = metrics.get(f"{name}{lo}"), metrics.get(f"{name}{hi}")
    text = format_number(value)
    if low is not None and high is not None:
        text += f" [{format_number(low)}, {format_number(high)}]"
    return text


def model_styles(models: Sequence[str]) -> dict[str, dict[str, str]]:
    """The ``color``, ``dash`` and ``marker`` of each model's series, stable across the charts of
    one scorecard when every section passes the same ordered list (see :func:`model_order`);
    spread into a series dict: ``{"label": m, "x": ..., "y": ..., **styles[m]}``."""
    return {
        m: {"color": PALETTE[i % len(PALETTE)], "dash": DASHES[i % len(DASHES)], "marker": MARKERS[i % len(MARKERS)]}
        for i, m in enumerate(models)
    }


def model_colors(models: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A (colour, dash pattern) per model, as in :func:`model_styles`."""
    return {m: (style["color"], style["dash"]) for m, style in model_styles(models).items()}


@contextlib.contextmanager
def weak_models(names: Iterable[str]) -> Iterator[None]:
    """Within the block, :func:`line_chart` marks the series labelled with one of ``names``
    (baselines that did not learn the task): its legend entry reads "NAME (weak baseline)"
    and its line is drawn faint, so nobody reads a constant predictor's flat robustness curve
    as strength."""
    token = _WEAK_MODELS.set(frozenset(names))
    try:
        yield
    finally:
        _WEAK_MODELS.reset(token)


def not_run_note(results: Iterable[Any]) -> str:
    """One paragraph listing the results that produced nothing to show (skipped, xfailed,
    error), with their reasons; empty string when there are none."""
    parts = []
    for r in results:
        word = getattr(r.outcome, "value", str(r.outcome))
        if word in ("skipped", "xfailed", "error"):
            reason = (r.message or "").strip() or "no reason given"
            if word == "error":
                reason = reason.splitlines()[-1] if reason else reason
            parts.append(f"<li><b>{esc(r.model)}</b> {esc(r.check)}: {outcome_badge(word)} {esc(reason)}</li>")
    if not parts:
        return ""
    return '<ul class="not-run">' + "".join(parts) + "</ul>"


# -------------------------------------------------------------------------------------------
# line charts
# -------------------------------------------------------------------------------------------


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _nice_step(span: float, target_ticks: int) -> float:
    raw = span / max(target_ticks, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10 * mag


def _linear_ticks(lo: float, hi: float, target_ticks: int = 5) -> tuple[float, float, list[float], int]:
    """Axis bounds covering [lo, hi] on round numbers, the ticks, and the decimals to print."""
    if hi - lo <= 0:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, target_ticks)
    start = math.floor(lo / step + 1e-9) * step
    end = math.ceil(hi / step - 1e-9) * step
    n = int(round((end - start) / step))
    ticks = [round(start + i * step, 12) + 0.0 for i in range(n + 1)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(step / 10 ** math.floor(math.log10(step) + 1e-9) - 2.5) < 1e-9:
        decimals += 1
    return start, end, ticks, decimals


def _log_ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if b <= a:
        b = a + 1
    ticks = [10.0**e for e in range(a, b + 1)]
    if b - a <= 2:
        ticks = sorted({t * m for t in ticks for m in (1, 2, 5) if 10.0**a <= t * m <= 10.0**b})
    return 10.0**a, 10.0**b, ticks


def _tick_text(v: float, decimals: int | None) -> str:
    if decimals is None:
        return f"{v:g}"
    return f"{v:.{decimals}f}" if abs(v) < 1e6 else f"{v:.2g}"


def _num(v: float) -> str:
    """A coordinate with one decimal, without '-0.0'."""
    s = f"{v:.1f}"
    return "0.0" if s == "-0.0" else s


def _runs(points: list[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """Split a list of points at the gaps (None) into runs of consecutive points."""
    runs: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if r]


def _signatures(
    prepared: list[dict[str, Any]], log_x: bool, y_range: tuple[float, float] | None, width: int, height: int
) -> list[tuple[tuple[int, int], ...]]:
    """Each series' points on a pixel grid as fine as the plot's: equal for two series that
    would cover each other on the chart."""
    points = [[(math.log10(x) if log_x else x, y) for x, y in zip(s["x"], s["y"]) if x is not None and y is not None]
              for s in prepared]
    xs = [x for p in points for x, _ in p]
    ys = [y for p in points for _, y in p]
    if not xs:
        return [() for _ in prepared]
    x0, y0 = min(xs), (y_range[0] if y_range else min(ys))
    x_span, y_span = (max(xs) - x0) or 1.0, ((y_range[1] if y_range else max(ys)) - y0) or 1.0
    return [tuple((round((x - x0) / x_span * width), round((y - y0) / y_span * height)) for x, y in p) for p in points]


def _steps(run: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The corners of a step line through ``run``: each value holds until the next point's x."""
    out = [run[0]]
    for (_, y0), (x1, y1) in zip(run, run[1:]):
        out += [(x1, y0), (x1, y1)]
    return out


def _marker(shape: str, x: float, y: float, size: float, tip: str = "") -> str:
    """One point marker of ``shape`` (see :data:`MARKERS`) centred on (x, y), ``size`` its
    radius, with ``tip`` as its tooltip; fill and stroke come from the enclosing group."""
    title = f"<title>{esc(tip)}</title>" if tip else ""
    if shape == "square":
        a = size * 0.85
        return f'<rect x="{_num(x - a)}" y="{_num(y - a)}" width="{_num(2 * a)}" height="{_num(2 * a)}">{title}</rect>'
    corners = {
        "triangle": ((0, -1.2), (1.05, 0.65), (-1.05, 0.65)),
        "triangle-down": ((0, 1.2), (1.05, -0.65), (-1.05, -0.65)),
        "diamond": ((0, -1.2), (1.2, 0), (0, 1.2), (-1.2, 0)),
    }.get(shape)
    if corners:
        d = "M" + " L".join(f"{_num(x + dx * size)},{_num(y + dy * size)}" for dx, dy in corners) + " Z"
        return f'<path d="{d}">{title}</path>'
    return f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{_num(size)}">{title}</circle>'


def line_chart(
    series: Sequence[Mapping[str, Any]],
    x_label: str,
    y_label: str,
    *,
    title: str = "",
    log_x: bool = False,
    y_range: tuple[float, float] | None = None,
    x_tick_labels: Sequence[str] | None = None,
    x_ticks: Sequence[float] | None = None,
    reference_lines: Sequence[Mapping[str, Any]] = (),
    width: int = 560,
    height: int = 300,
) -> str:
    """An inline ``<svg>`` line chart with axes, ticks, grid, optional confidence bands, a
    legend and a tooltip on every point.

    :param series: one dict per line: ``label`` (legend text), ``x`` and ``y`` (equal-length
        lists; a None/NaN ``y`` leaves a gap), optional ``lo``/``hi`` (a confidence band drawn
        behind the line where both are finite), optional ``names`` (one tooltip name per
        point, e.g. layer names), optional ``color``, ``dash`` (an SVG dash array) and
        ``marker`` (one of :data:`MARKERS`; see :func:`model_styles`), optional ``markers``
        (default True), ``width`` (the line's, default 2) and ``step`` (True for values that
        change in discrete steps, such as one model block after another: markers joined by a
        step line that holds each value until the next point, never a slope between them).
        A series whose points equal an earlier one's is drawn beneath it, wider and with hollow
        markers, and its legend entry reads "LABEL (identical to EARLIER)".
    :param x_label: the x axis title.
    :param y_label: the y axis title.
    :param title: the chart title, also its accessible name.
    :param log_x: a logarithmic x axis (non-positive x values are left out).
    :param y_range: fixed y bounds (values outside are clipped), e.g. ``(0, 1)`` for rates;
        default: round numbers around the data.
    :param x_tick_labels: categorical x: label ``i`` is drawn at x = i (the series' x values
        should then be 0, 1, 2, ...), rotated when long.
    :param x_ticks: where to put the x ticks (e.g. the epsilons that were measured), instead of
        round numbers; the axis spans them and the data.
    :param reference_lines: horizontal dotted lines, dicts ``{"y": value, "label": text}``,
        e.g. a threshold.
    :param width: the drawing's width in CSS pixels (it scales down to the page width).
    :param height: the plot area's height plus axes, before the legend.
    :returns: an ``<svg>`` element as a string; deterministic for the same arguments.
    """
    prepared = []
    weak = _WEAK_MODELS.get()
    for i, s in enumerate(series):
        xs = list(s.get("x") or [])
        n = len(xs)

        def column(key: str) -> list[float | None]:
            values = list(s.get(key) or [])
            return [(_finite(values[j]) if j < len(values) else None) for j in range(n)]

        x = [_finite(v) for v in xs]
        if log_x:
            x = [v if v is not None and v > 0 else None for v in x]
        names = list(s.get("names") or [])
        label = s.get("label")
        faint = label is not None and str(label) in weak
        prepared.append(
            {
                "label": f"series {i + 1}" if label is None else str(label) + (WEAK_SUFFIX if faint else ""),
                "opacity": 0.4 if faint else 1.0,
                "x": x,
                "y": column("y"),
                "lo": column("lo"),
                "hi": column("hi"),
                "names": [str(names[j]) if j < len(names) else "" for j in range(n)],
                "color": str(s.get("color") or PALETTE[i % len(PALETTE)]),
                "dash": str(s.get("dash") if s.get("dash") is not None else DASHES[i % len(DASHES)]),
                "marker": str(s.get("marker") or MARKERS[i % len(MARKERS)]),
                "markers": bool(s.get("markers", True)),
                "step": bool(s.get("step", False)),
                "width": float(s.get("width") or 2),
                "twin": None,
                "depth": 0,
            }
        )
    # A series whose points fall on those of one listed before it, to the pixel, is drawn beneath
    # it (the first, the user's model, is drawn last, on top), wider, with larger hollow markers,
    # and its legend says so: otherwise one line hides the other.
    signatures = _signatures(prepared, log_x, y_range, width, height)
    for j, s in enumerate(prepared):
        if signatures[j]:
            twins = [t["label"] for t, sig in zip(prepared[:j], signatures) if sig == signatures[j]]
            # each further copy lies lower and wider, so that all of them show around the top one
            s["twin"], s["depth"] = (twins[0], len(twins)) if twins else (None, 0)
        s["legend"] = s["label"] + (f" (identical to {s['twin']})" if s["twin"] else "")

    xs_all = [x for s in prepared for x, y in zip(s["x"], s["y"]) if x is not None and y is not None]
    ys_all = [
        v
        for s in prepared
        for x, y, lo, hi in zip(s["x"], s["y"], s["lo"], s["hi"])
        if x is not None
        for v in (y, lo, hi)
        if v is not None
    ]
    ys_all += [v for v in (_finite(r.get("y")) for r in reference_lines) if v is not None]

    # Layout: left margin for y tick labels and title, bottom for x ticks (taller when rotated).
    rotate = bool(x_tick_labels) and (len(x_tick_labels) > 6 or max((len(str(t)) for t in x_tick_labels), default=0) > 8)
    longest = max((len(str(t)) for t in x_tick_labels), default=0) if x_tick_labels else 0
    left, right, top = 58, 16, 30 if title else 12
    bottom = 44 + (int(min(longest, 24) * _CHAR_W * 0.6) if rotate else 0)
    plot_w, plot_h = width - left - right, height - top - bottom

    legend_items = [s for s in prepared if s["label"]] if len(prepared) > 1 or any(s["label"] for s in prepared) else []
    legend_rows: list[list[tuple[dict, float]]] = [[]]
    row_w = 0.0
    for s in legend_items:
        item_w = 28 + min(len(s["legend"]), 80) * _CHAR_W + 16
        if legend_rows[-1] and row_w + item_w > width - 16:
            legend_rows.append([])
            row_w = 0.0
        legend_rows[-1].append((s, row_w))
        row_w += item_w
    legend_h = 18 * len(legend_rows) + 6 if legend_items else 0
    total_h = height + legend_h

    aria = title or y_label
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {total_h}" width="{width}" height="{total_h}" role="img" '
        f'aria-label="{esc(aria)}" font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="{_FONT}">'
    ]
    if title:
        out.append(f"<title>{esc(title)}</title>")
        out.append(f'<text x="{left}" y="18" font-weight="600" font-size="13">{esc(title)}</text>')

    if not xs_all:
        out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>')
        out.append(
            f'<text x="{_num(left + plot_w / 2)}" y="{_num(top + plot_h / 2)}" text-anchor="middle" fill="#666">no data</text>'
        )
        out.append("</svg>")
        return "".join(out)

    # x scale
    fixed = sorted({v for v in (_finite(t) for t in (x_ticks or ())) if v is not None and (v > 0 or not log_x)})
    if fixed and not x_tick_labels:
        x0, x1 = min(fixed + xs_all), max(fixed + xs_all)
        if x1 <= x0:
            x0, x1 = (x0 / 2, x0 * 2) if log_x else (x0 - 0.5, x1 + 0.5)
        xticks, xdec = fixed, None
        lx0, lx1 = (math.log10(x0), math.log10(x1)) if log_x else (x0, x1)

        def sx(v: float) -> float:
            v = math.log10(v) if log_x else v
            return left + (v - lx0) / (lx1 - lx0) * plot_w
    elif log_x:
        x0, x1, xticks = _log_ticks(min(xs_all), max(xs_all))
        xdec: int | None = None
        lx0, lx1 = math.log10(x0), math.log10(x1)

        def sx(v: float) -> float:
            return left + (math.log10(v) - lx0) / (lx1 - lx0) * plot_w
    elif x_tick_labels:
        x0, x1 = -0.5, len(x_tick_labels) - 0.5
        x0, x1 = min(x0, min(xs_all) - 0.5), max(x1, max(xs_all) + 0.5)
        xticks, xdec = [], 0

        def sx(v: float) -> float:
            return left + (v - x0) / (x1 - x0) * plot_w
    else:
        x0, x1, xticks, xdec = _linear_ticks(min(xs_all), max(xs_all))

        def sx(v: float) -> float:
            return left + (v - x0) / (x1 - x0) * plot_w

    # y scale
    if y_range is not None:
        y0, y1 = float(y_range[0]), float(y_range[1])
        _, _, yticks, ydec = _linear_ticks(y0, y1)
        yticks = [t for t in yticks if y0 - 1e-12 <= t <= y1 + 1e-12]
    else:
        y0, y1, yticks, ydec = _linear_ticks(min(ys_all), max(ys_all))

    def sy(v: float) -> float:
        v = min(max(v, y0), y1)
        return top + plot_h - (v - y0) / (y1 - y0) * plot_h

    # frame, grid and ticks
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>')
    out.append('<g stroke="#e4e4e4" stroke-width="1">')
    for t in yticks:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(sy(t))}" y2="{_num(sy(t))}"/>')
    for t in xticks:
        out.append(f'<line x1="{_num(sx(t))}" x2="{_num(sx(t))}" y1="{top}" y2="{top + plot_h}"/>')
    out.append("</g>")
    out.append('<g fill="#333">')
    for t in yticks:
        out.append(f'<text x="{left - 6}" y="{_num(sy(t) + 4)}" text-anchor="end">{esc(_tick_text(t, ydec))}</text>')
    for t in xticks:
        out.append(f'<text x="{_num(sx(t))}" y="{top + plot_h + 16}" text-anchor="middle">{esc(_tick_text(t, xdec))}</text>')
    if x_tick_labels:
        for i, label in enumerate(x_tick_labels):
            text = str(label)
            if len(text) > 24:
                text = text[:23] + "\u2026"
            x = _num(sx(i))
            ty = top + plot_h + 14
            if rotate:
                out.append(
                    f'<text x="{x}" y="{ty}" text-anchor="end" transform="rotate(-40 {x} {ty})" font-size="11">{esc(text)}</text>'
                )
            else:
                out.append(f'<text x="{x}" y="{ty + 2}" text-anchor="middle">{esc(text)}</text>')
    out.append("</g>")
    out.append(
        f'<text x="{_num(left + plot_w / 2)}" y="{height - 6}" text-anchor="middle" fill="#222">{esc(x_label)}</text>'
    )
    cy = _num(top + plot_h / 2)
    out.append(f'<text x="14" y="{cy}" text-anchor="middle" transform="rotate(-90 14 {cy})" fill="#222">{esc(y_label)}</text>')

    # reference lines
    for ref in reference_lines:
        v = _finite(ref.get("y"))
        if v is None or not y0 <= v <= y1:
            continue
        yy = _num(sy(v))
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{yy}" y2="{yy}" stroke="#444" '
                   'stroke-dasharray="1 3" stroke-width="1.5"/>')
        if ref.get("label"):
            out.append(f'<text x="{left + plot_w - 4}" y="{_num(sy(v) - 4)}" text-anchor="end" fill="#444" '
                       f'font-size="11">{esc(ref["label"])}</text>')

    # bands first, then lines and points on top; the first series (the user's model) last
    drawn = list(reversed(prepared))
    for s in drawn:
        band = [
            (sx(x), sy(lo), sy(hi)) if x is not None and lo is not None and hi is not None else None
            for x, lo, hi in zip(s["x"], s["lo"], s["hi"])
        ]
        runs: list[list[tuple[float, float, float]]] = [[]]
        for p in band:
            if p is None:
                if runs[-1]:
                    runs.append([])
            else:
                runs[-1].append(p)
        color = esc(s["color"])
        for run in runs:
            if len(run) < 2:
                continue
            # a light fill, so overlapping bands stay apart, and each band's own edges
            pts = [f"{_num(x)},{_num(hi)}" for x, _, hi in run] + [f"{_num(x)},{_num(lo)}" for x, lo, _ in reversed(run)]
            out.append(f'<polygon points="{" ".join(pts)}" fill="{color}" fill-opacity="{BAND_OPACITY}" stroke="none"/>')
            for edge in (1, 2):
                d = "M" + " L".join(f"{_num(p[0])},{_num(p[edge])}" for p in run)
                out.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1" stroke-opacity="0.6" '
                           'stroke-dasharray="3 2"/>')
        for run in runs:
            if len(run) == 1:  # a lone interval: an error bar
                x, lo, hi = run[0]
                out.append(f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{_num(lo)}" y2="{_num(hi)}" '
                           f'stroke="{color}" stroke-opacity="0.5" stroke-width="3"/>')
    for s in drawn:
        points = [(sx(x), sy(y)) if x is not None and y is not None else None for x, y in zip(s["x"], s["y"])]
        dash = f' stroke-dasharray="{esc(s["dash"])}"' if s["dash"] else ""
        faint = f' stroke-opacity="{s["opacity"]}"' if s["opacity"] < 1 else ""
        width = s["width"] + 3 * s["depth"]
        for run in _runs(points):
            if len(run) >= 2:
                d = " ".join(f"{_num(x)},{_num(y)}" for x, y in (_steps(run) if s["step"] else run))
                out.append(f'<polyline points="{d}" fill="none" stroke="{esc(s["color"])}" stroke-width="{width:g}"{dash}{faint}/>')
        if s["markers"] or s["step"] or len([p for p in points if p]) == 1:
            if s["twin"]:  # hollow and larger, around the markers drawn over it
                out.append(f'<g fill="#fff" fill-opacity="0" stroke="{esc(s["color"])}" stroke-width="1.5"{faint}>')
            else:
                out.append(f'<g fill="{esc(s["color"])}"{faint.replace("stroke-opacity", "fill-opacity")}>')
            for j, p in enumerate(points):
                if p is None:
                    continue
                x_value, y_value = s["x"][j], s["y"][j]
                name = s["names"][j]
                tip = f"{s['label']}: " + (f"{name}, " if name else "")
                if x_tick_labels and 0 <= int(round(x_value)) < len(x_tick_labels) and not name:
                    tip += f"{x_tick_labels[int(round(x_value))]}, "
                else:
                    tip += f"{x_label} {format_number(x_value, 4)}, "
                tip += f"{y_label} {format_number(y_value, 4)}"
                if s["lo"][j] is not None and s["hi"][j] is not None:
                    tip += f" [{format_number(s['lo'][j], 3)}, {format_number(s['hi'][j], 3)}]"
                out.append(_marker(s["marker"], p[0], p[1], 3.5 + 2.5 * s["depth"], tip))
            out.append("</g>")

    # legend
    if legend_items:
        for r, row in enumerate(legend_rows):
            ly = height + 14 + 18 * r
            for s, offset in row:
                lx = 8 + offset
                color = esc(s["color"])
                if any(v is not None for v in s["lo"]):
                    out.append(f'<rect x="{_num(lx)}" y="{ly - 7}" width="22" height="10" fill="{color}" '
                               f'fill-opacity="{BAND_OPACITY}" stroke="{color}" stroke-opacity="0.6" stroke-dasharray="3 2"/>')
                dash = f' stroke-dasharray="{esc(s["dash"])}"' if s["dash"] else ""
                faint = f' stroke-opacity="{s["opacity"]}"' if s["opacity"] < 1 else ""
                out.append(f'<line x1="{_num(lx)}" x2="{_num(lx + 22)}" y1="{ly - 2}" y2="{ly - 2}" '
                           f'stroke="{color}" stroke-width="{min(s["width"], 2):g}"{dash}{faint}/>')
                if s["markers"] or s["step"]:
                    out.append(f'<g fill="{color}"{faint.replace("stroke-opacity", "fill-opacity")}>'
                               f'{_marker(s["marker"], lx + 11, ly - 2, 3.5)}</g>')
                label = s["legend"] if len(s["legend"]) <= 80 else s["legend"][:79] + "\u2026"
                out.append(f'<text x="{_num(lx + 28)}" y="{ly + 2}" fill="#222">{esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


# -------------------------------------------------------------------------------------------
# any artifact
# -------------------------------------------------------------------------------------------


def _table_artifact(data: Any) -> str:
    if isinstance(data, Mapping):
        headers = [str(k) for k in data]
        columns = [list(v) if isinstance(v, (list, tuple)) else [v] for v in data.values()]
        n = max((len(c) for c in columns), default=0)
        rows = [[c[i] if i < len(c) else None for c in columns] for i in range(n)]
        return table(headers, rows)
    data = list(data or [])
    if data and all(isinstance(row, Mapping) for row in data):
        headers: list[str] = []
        for row in data:
            headers += [str(k) for k in row if str(k) not in headers]
        return table(headers, [[row.get(h) for h in headers] for row in data])
    return table([], [list(row) if isinstance(row, (list, tuple)) else [row] for row in data])


def artifact_html(artifact: Any) -> str:
    """Render any ``auditkit.Artifact`` as a ``<figure>`` with its caption: ``image/png`` as an
    embedded image, ``curve`` as a line chart (``data``: ``x``, ``y``, optional ``lo``/``hi``,
    ``label``, ``x_label``, ``y_label``, ``x_labels`` for categories, ``names`` per point),
    ``table`` as a table (a list of row dicts, a dict of columns, or a list of rows), ``text``
    as preformatted text. Never raises: an artifact that cannot be rendered becomes a note."""
    name = str(getattr(artifact, "name", "artifact"))
    kind = str(getattr(artifact, "kind", ""))
    caption = str(getattr(artifact, "caption", "") or "")
    data = getattr(artifact, "data", None)
    try:
        if kind == "image/png":
            body = image_tag(data, caption or name)
        elif kind == "curve":
            if not isinstance(data, Mapping):
                raise TypeError(f"curve data must be a mapping with x and y, got {type(data).__name__}")
            label = str(data.get("label") or name)
            body = line_chart(
                [{"label": label, "x": data.get("x"), "y": data.get("y"), "lo": data.get("lo"), "hi": data.get("hi"),
                  "names": data.get("names")}],
                x_label=str(data.get("x_label") or "x"),
                y_label=str(data.get("y_label") or label),
                title=name,
                x_tick_labels=data.get("x_labels"),
                log_x=bool(data.get("log_x", False)),
            )
        elif kind == "table":
            body = _table_artifact(data)
        elif kind == "text":
            body = f"<pre>{esc(data if isinstance(data, str) else repr(data))}</pre>"
        else:
            body = f'<p class="muted">artifact {esc(name)} of kind {esc(kind)}: no renderer for this kind</p>'
    except Exception as exc:  # a broken artifact must not take the scorecard down
        body = f'<p class="muted">artifact {esc(name)} ({esc(kind)}) could not be rendered: {esc(type(exc).__name__)}: {esc(exc)}</p>'
    return figure(body, caption or name)


def curve_html(curve: Any) -> str:
    """Render an ``auditkit.check.Curve`` as a ``<figure>`` with a line chart and its band.
    Never raises: a curve that cannot be drawn becomes a note."""
    name = str(getattr(curve, "name", "curve"))
    caption = str(getattr(curve, "caption", "") or "")
    try:
        points = sorted(curve.points, key=lambda p: p.x)
        label = str(curve.label or name)
        body = line_chart(
            [{"label": label, "x": [p.x for p in points], "y": [p.value for p in points],
              "lo": [p.lo for p in points], "hi": [p.hi for p in points]}],
            x_label=str(curve.x_label or "x") + (f" ({curve.norm})" if curve.norm else ""),
            y_label=str(curve.y_label or curve.metric),
            title=name,
        )
    except Exception as exc:  # a broken curve must not take the scorecard down
        body = f'<p class="muted">curve {esc(name)} could not be rendered: {esc(type(exc).__name__)}: {esc(exc)}</p>'
    return figure(body, caption or name)
