"""Rich rendering for the terminal: every table, message and progress bar the CLI shows.

Place in the flow: presentation only, called by ``cli`` (the only module that imports
Rich for it); it computes nothing that the API does not already return (the portfolio
summary groups the scores it is given). The library layers it renders are imported
inside the functions that need them, so the CLI's start-up does not load them.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.segment import Segment
from rich.text import Text

from healthscore.core.values import value_text
from healthscore.views.format import has_bidi, has_controls, isolate, money, show_controls

if TYPE_CHECKING:
    import pyarrow as pa
    from rich.table import Table

    from healthscore.engine.explain import Explanation
    from healthscore.evaluate.calibrate import CalibrationResult, MetricChange
    from healthscore.evaluate.snapshot import SnapshotCalibration


def _table(*args, **kwargs) -> Table:
    """A Rich table; ``rich.table`` (with ``fractions``) is imported by the first one
    drawn, not by a command that only prints a note (``score --format parquet``)."""
    from rich.table import Table

    return Table(*args, **kwargs)


BAND_STYLE = {"green": "green", "yellow": "yellow", "red": "bold red", None: "dim"}

#: the width of output that is not a terminal: lines are never wrapped, tables never cut
UNWRAPPED = 10_000


class _Console(Console):
    """A Rich console that wraps at the terminal's width only when it prints to one, and
    prints text as written (no emoji codes).

    Rich takes 80 columns for a pipe or a file; then a table of scores wraps each row
    over several lines and ``grep`` finds half of it. Here output that is not a terminal
    is as wide as it needs to be, unless ``COLUMNS`` says otherwise.
    """

    def __init__(self, *args, **kwargs):
        fixed = kwargs.get("width") is not None
        # never read ``:name:`` as an emoji code: an account, a CSM or a path that holds
        # ``:-1:`` or ``:smile:`` prints as it is written
        kwargs.setdefault("emoji", False)
        super().__init__(*args, **kwargs)
        if not fixed:
            # Rich reads COLUMNS once, when the console is made (at import): read it when
            # printing instead, so the width is the one of the command that prints
            self._width = None

    @property
    def size(self) -> ConsoleDimensions:
        if self._width is None and not self.is_terminal and "COLUMNS" not in os.environ:
            return ConsoleDimensions(UNWRAPPED, super().size.height)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size

    def render(self, renderable, options=None):
        """Every piece of text printed, with bidirectional controls isolated
        (:func:`~healthscore.views.format.isolate`): an account, segment or CSM named with
        U+202E cannot reverse the cells and lines after it in a terminal; and with the
        control characters a terminal would run shown as symbols
        (:func:`~healthscore.views.format.show_controls`): a name holding ESC sequences
        cannot clear the screen or retitle the window. Rich's own styles and controls
        are not in the text: they pass as they are."""
        for segment in super().render(renderable, options):
            text = segment.text
            if not text or segment.control:
                yield segment
                continue
            if has_controls(text):
                text = show_controls(text)
            if has_bidi(text):
                text = isolate(text)
            yield segment if text is segment.text else Segment(text, segment.style, None)


# Rich finds sys.stdout / sys.stderr when it prints, so these follow a test's capture
stdout = _Console()
stderr = _Console(stderr=True)


@contextmanager
def console_to(path: Path | None) -> Iterator[Console]:
    """A console printing to ``path`` (unwrapped, no colour), or to stdout when None; the
    file is replaced only once everything is printed (see :mod:`healthscore.core.files`)."""
    if path is None:
        yield stdout
        return
    from healthscore.core.files import atomic_write

    with atomic_write(path, param="out") as f:
        yield _Console(file=f, width=UNWRAPPED)


@dataclass
class Column:
    """A column of a table that fits the console: numbers are never cut.

    ``drop``: 0 = always shown; when the console is too narrow, the shown columns with
    the highest ``drop`` go first (together). ``shrink_to``: text (a name) that may be cut with
    "…" down to this width; None = never cut.
    """

    header: str
    justify: str = "left"
    drop: int = 0
    shrink_to: int | None = None


def fitted_table(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
) -> tuple[Table, list[str]]:
    """A table of ``rows`` (plain strings, never markup, or styled Text) that fits
    ``console``'s width without wrapping a row or cutting a number: columns are dropped
    by their ``drop`` order, then names are cut; returns it and the dropped headers."""
    cells = [[c if isinstance(c, Text) else Text(str(c)) for c in row] for row in rows]
    natural = [
        max([Text(col.header).cell_len, *(row[i].cell_len for row in cells)])
        for i, col in enumerate(columns)
    ]
    least = [
        min(w, c.shrink_to) if c.shrink_to else w for w, c in zip(natural, columns, strict=True)
    ]
    shown = list(range(len(columns)))

    def need(widths: list[int]) -> int:  # columns are 2 apart (see the Table below)
        return sum(widths[i] for i in shown) + 2 * (len(shown) - 1)

    while need(least) > console.width:
        droppable = [i for i in shown if columns[i].drop]
        if not droppable:
            break
        last = max(columns[i].drop for i in droppable)  # a group goes together
        shown = [i for i in shown if columns[i].drop != last]
    excess = max(0, need(natural) - console.width)
    widths = dict.fromkeys(shown)
    for i in shown:
        cut = min(excess, natural[i] - least[i])
        excess -= cut
        widths[i] = natural[i] - cut
    table = _table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    for i in shown:
        c = columns[i]
        table.add_column(
            c.header,
            justify=c.justify,
            no_wrap=True,
            overflow="ellipsis" if c.shrink_to else "fold",
            width=widths[i],
        )
    for row in cells:
        table.add_row(*(row[i] for i in shown))
    return table, [columns[i].header for i in range(len(columns)) if i not in shown]


def _left_out(console: Console, dropped: list[str], where: str) -> None:
    if dropped:
        console.print(
            f"[dim]left out to fit {console.width} columns: {', '.join(dropped)} ({where})[/]",
            highlight=False,
        )


def error(message: object) -> None:
    """``Error: ...`` on stderr: how every command reports a failure."""
    stderr.print(
        f"[bold red]Error:[/] {escape(str(message))}", highlight=False, markup=True, soft_wrap=True
    )


def warning(message: object) -> None:
    stderr.print(f"[yellow]Warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def note(message: object) -> None:
    stderr.print(f"[yellow]Note:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def say(console: Console, text: object) -> None:
    """One line of plain text as it is: no markup, no highlighting, no wrapping."""
    console.print(str(text), highlight=False, soft_wrap=True, markup=False)


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def render_explanation(console: Console, e: Explanation) -> None:
    band = e.band_name or e.band or "no data"
    console.print(
        f"[bold]{escape(e.account_id)}[/] as of {e.as_of:%Y-%m-%d %H:%M} UTC - "
        f"score [bold]{_fmt(e.score, 1)}[/] [{BAND_STYLE.get(e.band)}]{escape(band)}[/], "
        f"coverage {e.coverage:.0%}",
        highlight=False,
    )
    console.print(
        f"segment {e.segment or '-'} (pillar weights: {e.segment_weights_used}), "
        f"CSM {e.csm or '-'}, model {e.model_label} ({e.model_version[:12]})",
        highlight=False,
        markup=False,
    )
    if e.probability_of:
        from healthscore.evaluate.probability import percent

        console.print(
            f"probability of {escape(e.probability_of)}: [bold]{percent(e.probability)}[/]",
            highlight=False,
        )
    pillars, _ = fitted_table(
        console,
        [Column("pillar"), *(Column(c, "right") for c in ("score", "model weight", "weight used"))],
        [
            [p.pillar, _fmt(p.score, 1), f"{p.model_weight:.1%}", f"{p.weight:.1%}"]
            for p in e.pillars
        ],
    )
    console.print(pillars)
    say(console, "metrics: raw value -> 0-100 x weight = points")
    rows = []
    for p in e.pillars:
        rows.append([Text(f"{p.pillar} ({_fmt(p.score, 1)})", style="bold"), "", "", "", "", ""])
        for m in (x for x in e.metrics if x.pillar == p.pillar):
            rows.append(
                [
                    f"  {m.shown}",
                    value_text(m.raw, m.unit) if m.raw is not None else "-",
                    _fmt(m.normalized, 1),
                    f"{m.weight:.1%}",
                    _fmt(m.contribution, 2),
                    m.missing or "",
                ]
            )
    held = [r for r in e.rules if r.holds or r.contribution]
    if held:
        rows.append([Text("rules", style="bold"), "", "", "", "", ""])
        for r in held:
            rows.append([f"  {r.rule}", "", "", "", _fmt(r.contribution, 2), r.effect])
    rows.append([Text("score", style="bold"), "", "", "", Text(_fmt(e.score, 2), "bold"), ""])
    metrics, dropped = fitted_table(
        console,
        [
            Column("metric", shrink_to=24),
            Column("raw", "right"),
            Column("0-100", "right"),
            Column("weight", "right"),
            Column("points", "right"),
            Column("missing data / rule", drop=1),
        ],
        rows,
    )
    console.print(metrics)
    for m in e.metrics:  # a piecewise normalisation, e.g. a shape learned by calibrate
        if m.points:
            say(
                console,
                f"{m.shown} -> 0-100 through the points {_points(m.points)} (raw: score, "
                "flat beyond the ends)",
            )
    if dropped:
        for r in held:
            say(console, f"rule {r.rule}: {r.effect} ({_fmt(r.contribution, 2)} points)")
    if e.band_forced_by:
        say(console, f"band forced to {band} by rule {e.band_forced_by}")
    if e.signals:
        say(console, "signals: " + ", ".join(e.signals))
    drivers = e.drivers()
    if drivers:
        say(console, "biggest drags: " + "; ".join(_drag(d) for d in drivers))
    for line in e.missing_summary():
        console.print(f"[dim]{escape(line)}[/]", highlight=False)


def _drag(d, short: bool = False) -> str:
    """One driver: its value (or how missing data was scored) and the points it costs."""
    lost = d.weight * (100 - d.normalized)
    value = (
        f"no data ({d.missing} {d.normalized:g})"
        if d.missing and d.missing != "fill"
        else value_text(d.raw, d.unit)
    )
    return (
        f"{d.shown} {value} (-{lost:.1f})" if short else f"{d.shown}: {value} (-{lost:.1f} points)"
    )


def render_change(console: Console, c) -> None:
    b, a = c.before, c.after
    say(
        console,
        f"{c.account_id}: {_fmt(b.score, 1)} ({b.band_name or b.band or 'no data'}) on "
        f"{b.as_of:%Y-%m-%d} -> {_fmt(a.score, 1)} ({a.band_name or a.band or 'no data'}) on "
        f"{a.as_of:%Y-%m-%d}, {c.delta:+.1f} points",
    )
    say(console, "why it moved, biggest first")
    still = [ln for ln in c.lines if abs(ln.effect) < 0.005]
    rows = []
    for ln in (x for x in c.lines if abs(x.effect) >= 0.005):
        name = f"rule {ln.name}" if ln.kind == "rule" else ln.shown
        if ln.kind == "metric":
            before, after = (
                "-" if v is None else value_text(v, ln.unit) for v in (ln.raw_before, ln.raw_after)
            )
        else:
            before, after = _fmt(ln.raw_before), _fmt(ln.raw_after)
        rows.append(
            [
                name,
                before,
                after,
                _fmt(ln.normalized_before, 1),
                _fmt(ln.normalized_after, 1),
                f"{ln.effect:+.2f}",
            ]
        )
    rows.append([Text("change", style="bold"), "", "", "", "", Text(f"{c.delta:+.2f}", "bold")])
    table, _ = fitted_table(
        console,
        [
            Column("line", shrink_to=24),
            Column("before", "right"),
            Column("after", "right"),
            Column("0-100 before", "right", drop=1),
            Column("0-100 after", "right", drop=1),
            Column("points", "right"),
        ],
        rows,
    )
    console.print(table)
    if still:
        console.print(f"[dim]{len(still)} metrics did not move the score[/]", highlight=False)
    say(console, c.summary())


@contextmanager
def progress_bar(console: Console) -> Iterator:
    """``update(step, fraction)`` for a long job: a transient bar on a terminal, nothing
    elsewhere (a redirected stream gets no bar and no blank line from one)."""
    if not console.is_terminal:
        yield lambda step, fraction: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # a terminal's

    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=1.0)

        def update(step: str, fraction: float) -> None:
            progress.update(task, description=step, completed=min(max(fraction, 0.0), 1.0))

        yield update


def _paragraph(console: Console, text: str) -> None:
    """Plain words before the figures: wrapped at a terminal's width, whole in a pipe."""
    console.print(text, highlight=False, markup=False)
    console.print()


def _plan_words(r) -> str:
    """The observation plan in words: ``every 1mo`` (a grid: the words the backtest always
    printed), else the plan's own (``each account 30d before each 12mo anniversary ...``)."""
    return getattr(r, "plan", "") or f"every {r.every}"


def _observed_words(r) -> str:
    words = _plan_words(r)
    return words if words.startswith("every ") else f"({words})"


def render_backtest(console: Console, r, *, plain: bool = True, model=None) -> None:
    """The backtest figures: overall and per segment, side by side with --vs; first
    (``plain``) one paragraph saying in plain words what was done and how to read it.
    The bands read as ``model`` (the backtested one) names them."""
    red = model.band_name("red") if model is not None else "red"
    green = model.band_name("green") if model is not None else "green"
    if plain and r.verdict:
        _paragraph(console, f"Verdict: {r.verdict}")
    if plain and getattr(r, "snapshot", False):
        _paragraph(
            console,
            "In plain words: every account was scored once, at the snapshot date, and the "
            "scores were set against the outcomes on file. Recall is the share of accounts "
            f"that churned which the score had in {red}; the false-positive rate is the share "
            f"of accounts that stayed but were {red} anyway. ROC AUC says how well the score "
            "ranks the accounts that left below those that stayed (1 = always, 0.5 = a coin "
            "toss). The snapshot has no dates, so it cannot say how early a warning came.",
        )
    elif plain:
        _paragraph(
            console,
            f"In plain words: we went back to {_plan_words(r)} between {r.start:%Y-%m-%d} "
            f"and {r.end:%Y-%m-%d}, scored each account with only the data it had then, and "
            f"looked at what happened in the {r.horizon} after. Recall is the share of "
            f"accounts that churned which were {red} {r.lead} before they left; the "
            f"false-positive rate is the share of accounts that stayed but were {red} anyway. "
            "ROC AUC says how well the score ranks the accounts that left below those that "
            "stayed (1 = always, 0.5 = a coin toss).",
        )
    if getattr(r, "snapshot", False):
        console.print(
            f"[bold]backtest[/] of {escape(r.model_label)} ({r.model_version[:12]}) on snapshot "
            f"data: one observation per account at {r.start:%Y-%m-%d}, labelled by the outcomes on "
            f"file (no dates, no lead time); {r.every}; 95 % intervals from a bootstrap over "
            "accounts",
            highlight=False,
        )
    else:
        console.print(
            f"[bold]backtest[/] of {escape(r.model_label)} ({r.model_version[:12]}): observations "
            f"{_observed_words(r)} from {r.start:%Y-%m-%d} to {r.end:%Y-%m-%d}, outcome within "
            f"{r.horizon}, judged {r.lead} before it; 95 % intervals from a bootstrap over "
            "accounts",
            highlight=False,
        )
    when = "at the snapshot" if getattr(r, "snapshot", False) else "at event - lead"
    rows = [
        (f"recall: flagged {when}", "recall"),
        (f"opposite band {when}", "opposite_share"),
        ("false-positive rate", "false_positive_rate"),
        ("precision of the flag", "precision"),
        ("ROC AUC", "roc_auc"),
        ("PR AUC", "pr_auc"),
        ("score-outcome correlation", "correlation"),
    ]
    riskiest = [(f"recall in the riskiest {k} of the book", k) for k in ("10%", "20%")]
    for kind, ev in r.evaluations.items():
        flag = escape(red if kind == "churned" else green)
        table = _table(
            title=f"{kind} (flag: {flag}); {ev.overall.events} events judged, "
            f"{ev.overall.positives} of {ev.overall.observations:,} observations positive",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("figure")
        table.add_column(escape(r.model_label), justify="right")
        other = r.vs_evaluations.get(kind) if r.vs_evaluations else None
        if other is not None:
            table.add_column(escape(r.vs_label or "vs"), justify="right")
            table.add_column("difference", justify="right")
        diffs = {d.metric: d.value for d in r.differences.get(kind, [])}
        for label, key in rows:
            cells = [label, str(getattr(ev.overall, key))]
            if other is not None:
                cells += [str(getattr(other.overall, key)), str(diffs.get(key, ""))]
            table.add_row(*cells)
        for label, key in riskiest:
            if kind != "churned":
                label = label.replace("riskiest", "healthiest")
            cells = [label, str(ev.overall.recall_riskiest.get(key, "-"))]
            if other is not None:
                cells += [str(other.overall.recall_riskiest.get(key, "-")), ""]
            table.add_row(*cells)
        o = ev.overall
        cells = ["median lead time (days)", _fmt(o.median_lead_days, 0)]
        if other is not None:
            cells += [_fmt(other.overall.median_lead_days, 0), ""]
        table.add_row(*cells)
        if kind == "churned":
            share = _pct(o.flagged_but_renewed_share)
            cells = [f"{red} but renewed", f"{o.flagged_but_renewed} ({share})"]
            if other is not None:
                oo = other.overall
                cells += [f"{oo.flagged_but_renewed} ({_pct(oo.flagged_but_renewed_share)})", ""]
            table.add_row(*cells)
        console.print(table)
        lift = " ".join("-" if x is None else f"{x:.1f}" for x in o.lift)
        console.print(f"lift per decile, most flagged first: {lift}", highlight=False)
        seg = _table(title=f"{kind} by segment", title_justify="left", box=box.SIMPLE_HEAD)
        for c in ("segment", "observations", "events", "recall", "ROC AUC", "FPR"):
            seg.add_column(c, justify="left" if c == "segment" else "right")
        for name, m in ev.segments.items():
            seg.add_row(
                escape(name),
                f"{m.observations:,}",
                str(m.events),
                str(m.recall),
                str(m.roc_auc),
                str(m.false_positive_rate),
            )
        console.print(seg)
    for note in r.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def render_portfolio(console: Console, result, command: str = "healthscore") -> None:
    from healthscore.engine import explain

    rows = result.scores.to_pylist()
    model = result.model
    loaded = ", ".join(f"{r.table} {r.inserted:,}" for r in result.loads)
    console.print(f"[bold]demo[/]: loaded {loaded}", highlight=False)
    t = result.seconds
    console.print(
        f"generated in {t.get('generate', 0):.1f}s, loaded in {t.get('load', 0):.1f}s, "
        f"scored {len(rows):,} accounts in {t.get('score', 0):.1f}s "
        f"as of {result.as_of:%Y-%m-%d}",
        highlight=False,
    )
    counts = Counter(r["band"] for r in rows)
    arr = defaultdict(float)
    for r in rows:
        arr[r["band"]] += r.get("arr") or 0.0
    bands = _table(title="portfolio by band", title_justify="left")
    for c in ("band", "accounts", "share", "ARR"):
        bands.add_column(c, justify="left" if c == "band" else "right")
    for b in ("green", "yellow", "red", None):
        if counts.get(b):
            bands.add_row(
                band_text(model, b),
                f"{counts[b]:,}",
                f"{counts[b] / len(rows):.0%}",
                f"{arr[b]:,.0f}",
            )
    console.print(bands)
    risky = sorted(
        (r for r in rows if r["score"] is not None), key=lambda r: (r["score"], r["account_id"])
    )
    top = _table(title="10 riskiest accounts", title_justify="left")
    for c in ("account", "segment", "CSM", "score", "ARR", "top negative drivers"):
        top.add_column(c, justify="right" if c in ("score", "ARR") else "left")
    for r in risky[:10]:
        e = explain.from_row(model, r)
        drivers = ", ".join(
            f"{d.shown} {value_text(d.raw, d.unit)} (-{d.weight * (100 - d.normalized):.1f})"
            for d in e.drivers(3)
        )
        top.add_row(
            escape(r["account_id"]),
            escape(r["segment"] or ""),
            escape(r["csm"] or ""),
            _fmt(r["score"], 1),
            f"{r.get('arr') or 0:,.0f}",
            Text(drivers),
        )
    console.print(top)
    if result.history is not None:
        h = result.history
        console.print(
            f"history: {len(h.computed) + len(h.skipped)} weekly dates stored "
            f"({h.rows:,} scores) in {t.get('history', 0):.1f}s",
            highlight=False,
        )
        console.print(
            f"[bold]{len(result.declines)} rapid declines[/] (20+ points within 30 days), "
            "steepest first:",
            highlight=False,
        )
        for c in result.declines[:15]:
            say(console, f"  {c.summary()}")
        if len(result.declines) > 15:
            console.print(f"  ... and {len(result.declines) - 15} more", highlight=False)
    where = "" if result.directory.resolve() == Path.cwd() else f"cd {result.directory} && "
    first = risky[0]["account_id"] if risky else "ACCOUNT"
    say(console, f"store: {result.db_path}   model: {result.model_path}")
    if result.report_path is not None:
        say(console, f"report: {result.report_path} (open it in a browser)")
    hints = [
        f"{command} explain {first} --as-of {result.as_of:%Y-%m-%d}",
        f"{command} score --format csv --out scores.csv",
    ]
    if result.declines:
        c = result.declines[0]
        hints.insert(
            1,
            f"{command} explain {c.account_id} --as-of {c.after.as_of:%Y-%m-%d} "
            f"--vs {c.before.as_of:%Y-%m-%d}",
        )
        hints.insert(2, f"{command} trends --as-of {result.as_of:%Y-%m-%d} --class rapid_decline")
    hints.append(f"{command} serve --admin-user admin   (the dashboard and API, until Ctrl-C)")
    for hint in hints:
        console.print(f"try: {where}{hint}", highlight=False, soft_wrap=True)


# --- compare: two models side by side (healthscore compare) ----------------------------------


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def left_out_notes(books: dict) -> list[str]:
    """What the scores of each model rest on (``{"new": Evidence, "current": Evidence}``),
    in the words ``score`` prints: one line when both models leave out the same accounts
    for the same reasons, else one line per model.

    >>> from datetime import datetime
    >>> from healthscore.engine.asof import Evidence
    >>> d = datetime(2025, 1, 1)
    >>> left_out_notes({"new": Evidence(d, 5, {"not yet created": 2}),
    ...                 "current": Evidence(d, 5, {"not yet created": 2})})
    ['scored 3 of 5 accounts as of 2025-01-01; left out: 2 not yet created']
    >>> left_out_notes({"new": Evidence(d, 5, {"outside the population": 1}),
    ...                 "current": Evidence(d, 5)})  # doctest: +NORMALIZE_WHITESPACE
    ['new model: scored 4 of 5 accounts as of 2025-01-01; left out: 1 outside the population',
     'current model: scored 5 of 5 accounts as of 2025-01-01']
    """
    texts = {name: book.summary() for name, book in books.items()}
    if len(set(texts.values())) <= 1:
        return list(texts.values())[:1]
    return [f"{name} model: {text}" for name, text in texts.items()]


def render_comparison(console: Console, c) -> None:
    """A :class:`healthscore.evaluate.compare.Comparison`: matrix, biggest changes, history."""
    s = c.summary
    card = "" if c.scorecard == "health" else f", scorecard {c.scorecard}"
    console.print(
        f"[bold]compare[/] as of {c.as_of:%Y-%m-%d %H:%M} UTC{card}\n"
        f"  new:     {escape(str(c.new))}\n  current: {escape(str(c.current))}",
        highlight=False,
    )
    arr = c.has_arr
    title = "band migration: rows = current model, columns = new model; accounts" + (
        " (ARR)" if arr else ""
    )
    matrix = _table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    matrix.add_column("current \\ new", no_wrap=True)
    for b in c.bands:  # columns: the new model's names for its bands
        name = escape(c.new.band_name(b))
        matrix.add_column(f"[{BAND_STYLE.get(b, 'dim')}]{name}[/]", justify="right", no_wrap=True)
    matrix.add_column("total", justify="right", no_wrap=True)
    for b1 in c.bands:
        row = c.matrix[b1]
        n = sum(cell.accounts for cell in row.values())
        if not n and b1 == "not scored" and not c.entered:
            continue
        cells = []
        for b2 in c.bands:
            cell = row[b2]
            text = f"{cell.accounts:,}" + (f" ({money(cell.arr)})" if arr else "")
            if not cell.accounts:
                text = "[dim]-[/]"
            elif b1 == b2:
                text = f"[bold]{text}[/]"
            cells.append(text)
        total_arr = sum(cell.arr or 0.0 for cell in row.values())
        total = f"{n:,}" + (f" ({money(total_arr)})" if arr else "")
        name = escape(c.current.band_name(b1))  # rows: the current model's names
        matrix.add_row(f"[{BAND_STYLE.get(b1, 'dim')}]{name}[/]", *cells, total)
    console.print(matrix)
    moved = (
        f"{s.accounts_both:,} accounts scored by both: {s.moved_up:,} move up a band"
        + (f" ({money(s.arr_moved_up)} ARR)" if arr else "")
        + f", {s.moved_down:,} down"
        + (f" ({money(s.arr_moved_down)} ARR)" if arr else "")
        + f", {s.same_band:,} stay"
    )
    if s.mean_change is not None:
        moved += (
            f"; mean change {s.mean_change:+.1f} points "
            f"(mean absolute change {s.mean_abs_change:.1f})"
        )
    console.print(moved, highlight=False)
    console.print(
        f"{_red_names(c)}: {_share(s.red_share_current)} of accounts under the current model "
        f"-> {_share(s.red_share_new)} under the new one; {s.entered:,} accounts enter the "
        f"population, {s.left:,} leave it",
        highlight=False,
        markup=False,
    )
    for note in c.notes:
        console.print(f"[yellow]Note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    changes = [ch for ch in c.changes if abs(ch.delta) >= 0.05]
    if c.changes and not changes:
        console.print("no account's score changes by 0.05 points or more", highlight=False)
    if changes:
        top = _table(
            title=f"{len(changes)} biggest score changes, and why",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for col in ("account", "segment", "current", "new", "change"):
            right = col not in ("account", "segment")
            top.add_column(col, no_wrap=True, justify="right" if right else "left")
        top.add_column("biggest lines (points)")
        for ch in changes:
            top.add_row(
                escape(ch.account_id),
                escape(ch.segment or ""),
                f"{_fmt(ch.score_current, 1)} [{BAND_STYLE.get(ch.band_current, 'dim')}]"
                f"{escape(ch.band_name_current or ch.band_current)}[/]",
                f"{_fmt(ch.score_new, 1)} [{BAND_STYLE.get(ch.band_new, 'dim')}]"
                f"{escape(ch.band_name_new or ch.band_new)}[/]",
                f"{ch.delta:+.1f}",
                Text(ch.summary().split(": ", 1)[1]),
            )
        console.print(top)
    if c.history is not None:
        reds = c.current.band_name("red"), c.new.band_name("red")
        _render_compare_history(console, c.history, *reds)


def _red_names(c) -> str:
    """The red band as both models name it: ``red``, or ``stalled (current) / at risk
    (new)`` when the models name it differently."""
    cur, new = c.current.band_name("red"), c.new.band_name("red")
    return cur if cur == new else f"{cur} (current) / {new} (new)"


def _render_compare_history(console: Console, h, red: str = "red", red_new: str = "red") -> None:
    if h.points:
        table = _table(
            title="over stored history: the same comparison at each stored as-of date",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        for col in ("as of", "accounts", "change band", "up", "down", "enter", "leave"):
            table.add_column(col, justify="left" if col == "as of" else "right", no_wrap=True)
        for col in (f"{red} current", f"{red_new} new", "mean change", "biggest change"):
            col = escape(col)
            table.add_column(col, justify="right", no_wrap=True)
        for p in h.points:
            s = p.summary
            big = p.biggest_change
            table.add_row(
                f"{p.as_of:%Y-%m-%d}",
                f"{s.accounts_both:,}",
                f"{s.changed_band:,}",
                f"{s.moved_up:,}",
                f"{s.moved_down:,}",
                f"{s.entered:,}",
                f"{s.left:,}",
                _share(s.red_share_current),
                _share(s.red_share_new),
                "-" if s.mean_change is None else f"{s.mean_change:+.1f}",
                "-" if big is None or abs(big[1]) < 0.05 else f"{escape(big[0])} {big[1]:+.1f}",
            )
        console.print(table)
    for note in h.notes:
        console.print(f"[yellow]History:[/] {escape(note)}", highlight=False, soft_wrap=True)


# --- ARR at risk (healthscore score with a fitted probability) ------------------------------


def render_arr_at_risk(console: Console, scores, model) -> None:
    """Expected outcomes and ARR at risk (Σ p x ARR), overall, per segment and per CSM."""
    from healthscore.evaluate.probability import arr_at_risk

    what = model.spec.probability.describe()
    if not scores.num_rows:
        console.print(f"no account scored: no ARR at risk of {what}", highlight=False)
        return
    total = arr_at_risk(scores, None)[0]
    arr = (
        f"; ARR at risk {money(total.arr_at_risk)} of {money(total.arr)} ({total.share or 0:.1%})"
        if total.arr is not None
        else " (no `arr` metric in the model: ARR left out)"
    )
    console.print(
        f"[bold]ARR at risk[/] of {escape(what)}: expected {total.expected:,.1f} of "
        f"{total.accounts:,} accounts{arr}",
        highlight=False,
    )
    for by, label in (("segment", "segment"), ("csm", "CSM")):
        table = _table(
            title=f"ARR at risk by {label} (Σ probability x ARR)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
        )
        table.add_column(label)
        for c in ("accounts", "expected", "ARR", "ARR at risk", "share"):
            table.add_column(c, justify="right")
        for r in arr_at_risk(scores, by):
            table.add_row(
                escape(r.group or "(none)"),
                f"{r.accounts:,}",
                f"{r.expected:,.1f}" if r.expected >= 10 else f"{r.expected:.2f}",
                money(r.arr),
                money(r.arr_at_risk),
                "-" if r.share is None else f"{r.share:.1%}",
            )
        console.print(table)


# --- calibration -------------------------------------------------------------------


def _weight_pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _anchor(bad, good) -> str:
    return "-" if bad is None else f"{bad:g} -> {good:g}"


def _points(points: list[tuple[float, float]]) -> str:
    """``0: 0, 60: 85, 365: 100`` (raw: score)."""
    return ", ".join(f"{x:g}: {v:g}" for x, v in points)


def _categories(mapping: dict[str, float] | None) -> str:
    if not mapping:
        return "-"
    shown = ", ".join(f"{k} {v:g}" for k, v in list(mapping.items())[:4])
    return shown + (f" (+{len(mapping) - 4})" if len(mapping) > 4 else "")


def _pct1(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def weights_table(metrics: list[MetricChange], pillars: dict[str, tuple[float, float]]) -> Table:
    """Per metric its old and new weight and normalisation (anchors or category scores),
    then per pillar its old and new weight."""
    t = _table(title="weights (% of the score) and normalisation", box=box.SIMPLE_HEAD)
    for c in ("pillar", "metric", "weight", "new", "was", "now", "note"):
        t.add_column(c, justify="right" if c in ("weight", "new") else "left")
    for c in metrics:
        if c.kind == "map":
            was, now = _categories(c.old_map), _categories(c.new_map)
        else:
            was, now = _anchor(c.old_bad, c.old_good), _anchor(c.new_bad, c.new_good)
            if c.old_scale == "log":
                was += " (log)"
            if c.new_scale == "log":
                now += " (log)"
            if c.old_points is not None:
                was = _points(c.old_points)
            if c.new_points is not None:
                now = _points(c.new_points)
        t.add_row(
            escape(c.pillar),
            escape(c.metric),
            _weight_pct(c.old_weight),
            _weight_pct(c.new_weight),
            was,
            now,
            escape(c.note or ""),
        )
    for p, (old, new) in pillars.items():
        t.add_row(
            f"[bold]{escape(p)}[/]", "(pillar)", _weight_pct(old), _weight_pct(new), "", "", ""
        )
    return t


def render_calibration(console: Console, r: CalibrationResult) -> None:
    """Weight changes, bands, the training figures and the held-out comparison, after
    the verdict on the held-out dates and one paragraph in plain words."""
    if r.backtest is not None and r.backtest.verdict:
        _paragraph(console, f"Verdict, on the dates the fit never saw: {r.backtest.verdict}")
    _paragraph(
        console,
        f"In plain words: the weights and the band thresholds were fitted so that the "
        f"score best separates the accounts that {r.outcome} within {r.horizon} from the "
        f"rest, using only what was known up to {r.train_until:%Y-%m-%d}; then the old and "
        "the new model were both judged on the later dates the fit never saw. Below: each "
        "metric's weight before and after, the new bands, and the two models side by side.",
    )
    console.print(
        f"[bold]calibrated[/] {escape(r.old_label)} ({r.old_version[:12]}) -> "
        f"{escape(r.model.label)} ({r.model.version[:12]}): {escape(r.outcome)} within "
        f"{r.horizon}, trained on {r.observations:,} observations of {r.accounts:,} accounts "
        f"at {len(r.train_dates)} dates {r.train_dates[0]:%Y-%m-%d} to "
        f"{r.train_dates[-1]:%Y-%m-%d} ({r.positives} positive, {r.events} accounts), "
        f"nothing after {r.train_until:%Y-%m-%d}",
        highlight=False,
    )
    render_review(console, r.review)
    console.print(weights_table(r.metrics, r.pillars))
    console.print(
        f"bands: {_bands_change(r)}; on the training "
        f"observations recall {_pct1(r.old_train_recall)} -> {_pct1(r.train_recall)}, "
        f"false-positive rate {_pct1(r.old_train_fpr)} -> {_pct1(r.train_fpr)}, "
        + _red_share_text(r),
        highlight=False,
        markup=False,
    )
    if r.out is not None:
        say(console, f"wrote {r.out}")
    if r.backtest is not None:
        console.print(
            f"[bold]held out[/]: {len(r.test_dates)} observation dates from "
            f"{r.test_dates[0]:%Y-%m-%d} to {r.test_dates[-1]:%Y-%m-%d} (after the training "
            "period only)",
            highlight=False,
        )
        e = r.equal_fpr
        if e is not None and e.old_fpr is not None:
            console.print(
                f"recall at equal false-positive rate ({e.positives} of {e.observations:,} "
                f"held-out observations positive): old {_pct1(e.old_recall)} at FPR "
                f"{_pct1(e.old_fpr)}; new {_pct1(e.new_recall)} at FPR {_pct1(e.new_fpr)} "
                f"(score below {e.new_threshold:g})",
                highlight=False,
            )
        render_backtest(console, r.backtest, plain=False, model=r.model)
    for note in r.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


def render_review(console: Console, lines: list[str]) -> None:
    """What to check before trusting a calibration: flips, zeroed metrics, fixed
    directions held against the data; first, before the weights."""
    if not lines:
        console.print("review: no direction flipped, no metric zeroed", highlight=False)
        return
    console.print(f"[bold]review first[/] ({len(lines)}):", highlight=False)
    for line in lines:
        say(console, f"  {line}")


def _bands_change(r) -> str:
    """``green 80 -> 75, yellow 50 -> 55``, each band as the calibrated model names it."""
    name = r.model.band_name
    return (
        f"{name('green')} {r.old_bands['green']:g} -> {r.new_bands['green']:g}, "
        f"{name('yellow')} {r.old_bands['yellow']:g} -> {r.new_bands['yellow']:g}"
    )


def _red_share_text(r) -> str:
    """``red 8.1 % -> 12.0 % of observations (cap 12.2 %, bound: yellow 61 wanted)``, each
    band as the calibrated model names it."""
    red, yellow = r.model.band_name("red"), r.model.band_name("yellow")
    text = f"{red} {_pct1(r.old_red_share)} -> {_pct1(r.red_share)} of them "
    text += f"(cap {_pct1(r.red_cap)}"
    if r.wanted_yellow is not None:
        text += f"; the cap bound: the target recall wanted {yellow} {r.wanted_yellow:g}"
    return text + ")"


def render_snapshot_calibration(console: Console, r: SnapshotCalibration) -> None:
    """Weights, bands, the cross-validated comparison and the backtest table, after the
    out-of-fold verdict and one paragraph in plain words."""
    if r.backtest.verdict:
        _paragraph(console, f"Verdict, out of fold: {r.backtest.verdict}")
    _paragraph(
        console,
        f"In plain words: the weights and the band thresholds were fitted so that the "
        f"score best separates the {r.positives:,} accounts that {r.outcome} from the "
        f"rest, each time on {r.folds - 1} of {r.folds} groups of accounts and judged on "
        "the group left out, so no account judges a fit it was part of. Below: each "
        "metric's weight before and after, the new bands, and ROC AUC old vs new.",
    )
    console.print(
        f"[bold]calibrated on snapshot data[/] {escape(r.old_label)} ({r.old_version[:12]}) -> "
        f"{escape(r.model.label)} ({r.model.version[:12]}): {r.observations:,} accounts at "
        f"{r.as_of:%Y-%m-%d}, {r.positives:,} {escape(r.outcome)}; {r.folds}-fold stratified "
        f"cross-validation, seed {r.seed}",
        highlight=False,
    )
    render_review(console, r.review)
    console.print(weights_table(r.metrics, r.pillars))
    console.print(
        f"bands: {_bands_change(r)}; " + _red_share_text(r),
        highlight=False,
        markup=False,
    )
    a = _table(title="ROC AUC (95 % bootstrap interval)", box=box.SIMPLE_HEAD, title_justify="left")
    a.add_column("model")
    a.add_column("ROC AUC", justify="right")
    for name, est in r.auc.items():
        a.add_row(escape(name), str(est))
    console.print(a)
    if r.out is not None:
        say(console, f"wrote {r.out}")
    render_backtest(console, r.backtest, plain=False, model=r.model)
    for note in r.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


# --- tables of the scores, trends, flags and a probability curve -----------------------------


def render_validation(console: Console, model) -> None:
    """A valid model's outline; a note per percentile normalisation not fitted yet."""
    say(
        console,
        f"{model.file}: OK - {len(model.spec.metrics)} metrics in {len(model.spec.pillars)} "
        f"pillars, {len(model.segment_names())} segment overrides; version {model.version[:12]}",
    )
    for name in model.unfitted_percentiles():
        stderr.print(
            f"[yellow]Note:[/] {escape(name)} uses percentile normalisation that is not fitted "
            "yet; run `healthscore model fit-percentiles --as-of <date>` before scoring",
            highlight=False,
        )


SORTED_BY = {
    "arr": "largest ARR first",
    "renewal": "soonest renewal first",
    "name": "by name",
}


def band_text(model, band: str | None) -> Text:
    """A band as the scorecard names it (``ready``, ``red``), in its band's colour."""
    return Text(model.band_name(band), style=BAND_STYLE.get(band, "dim"))


def render_scores(
    console: Console, scores: pa.Table, model, *, total: int | None = None, sort: str = "score"
) -> None:
    """One row per account, those that need attention first: account, name, CSM, ARR,
    renewal, score, band, p(outcome), coverage, segment, signals, pillars; a narrow
    terminal loses the pillars first, then signals, segment, coverage. Below it the ARR
    at risk when the model has a fitted probability."""
    card = "" if model.scorecard_name == "health" else f" - scorecard {model.scorecard_name}"
    count = f"{scores.num_rows:,}" + (
        f" of {total:,}" if total is not None and total != scores.num_rows else ""
    )
    order = (
        SORTED_BY.get(sort)
        or ("highest score first" if model.highest_first else "lowest score first")
        if total is not None
        else "by account id"
    )
    console.print(  # wrapped at a terminal's width, whole in a pipe
        f"{count} accounts - model {model.label} ({model.version[:12]}){card} - {order}",
        highlight=False,
        markup=False,
    )
    names = "account_name" in scores.column_names
    signals = any(r.signal for r in model.spec.rules.values())
    chance = "probability" in scores.column_names
    if chance:  # only then: the probability module brings pandas with it
        from healthscore.evaluate.probability import percent

        what = model.spec.probability.describe().split()[0]
    columns = [Column("account")]
    if names:
        columns += [
            Column("name", shrink_to=12, drop=5),
            Column("CSM", shrink_to=10, drop=6),
            Column("ARR", "right"),
            Column("renewal", drop=4),
        ]
    columns += [Column("score", "right"), Column("band")]
    if chance:
        columns.append(Column(f"p({what})", "right"))
    columns += [Column("coverage", "right", drop=8), Column("segment", drop=9)]
    if not names:
        columns.append(Column("CSM", shrink_to=10, drop=10))
    if signals:
        columns.append(Column("signals", shrink_to=10, drop=11))
    columns += [Column(p, "right", drop=20 + i) for i, p in enumerate(model.spec.pillars)]
    rows = []
    for r in scores.to_pylist():
        row = [r["account_id"]]
        if names:
            renewal = r["renewal_date"]
            row += [
                r["account_name"] or "",
                r["csm"] or "",
                money(r["arr_in_force"]),
                f"{renewal:%Y-%m-%d}" if renewal is not None else "-",
            ]
        row += [_fmt(r["score"], 1), band_text(model, r["band"])]
        if chance:
            row.append(percent(r["probability"]))
        row += [f"{r['coverage']:.0%}", r["segment"] or ""]
        if not names:
            row.append(r["csm"] or "")
        if signals:
            row.append(r["signals"] or "")
        row += [_fmt(r[f"pillar__{p}"], 1) for p in model.spec.pillars]
        rows.append(row)
    table, dropped = fitted_table(console, columns, rows)
    console.print(table)
    _left_out(console, dropped, "--format csv has every column")
    if chance:
        render_arr_at_risk(console, scores, model)


def render_unscored(console: Console, unscored: pa.Table, as_of) -> None:
    """The accounts left out of the scores, with why."""
    table = _table(
        title=f"{unscored.num_rows} accounts left out as of {as_of:%Y-%m-%d}",
        box=box.SIMPLE_HEAD,
    )
    for col in ("account", "name", "left out because"):
        table.add_column(col)
    for r in unscored.to_pylist():
        table.add_row(escape(r["account_id"]), escape(r["name"] or ""), r["reason"])
    console.print(table)


def render_trends(console: Console, trends: pa.Table, as_of, model=None) -> None:
    """Accounts by trend class: score now and its band, the highest score of the
    rapid-decline window and its date (what a rapid decline is measured from), the
    score one window ago and the change since then."""
    window = model.spec.trends.rapid_decline.within if model is not None else "30d"
    say(console, f"trends as of {as_of:%Y-%m-%d}")
    columns = [
        Column("account"),
        Column("trend"),
        Column("score now", "right"),
        Column("band", drop=3),
        Column(f"{window} peak", "right"),
        Column("peak on"),
        Column(f"{window} ago", "right", drop=2),
        Column("change", "right", drop=1),
    ]
    rows = []
    for r in trends.to_pylist():
        peak = r.get("peak_as_of")
        rows.append(
            [
                r["account_id"],
                r["trend"],
                _fmt(r["score_now"], 1),
                band_text(model, r["band"]) if model is not None else (r["band"] or "-"),
                _fmt(r.get("peak"), 1),
                f"{peak:%Y-%m-%d}" if peak is not None else "-",
                _fmt(r["score_then"], 1),
                "-" if r["change"] is None else f"{r['change']:+.1f}",
            ]
        )
    table, dropped = fitted_table(console, columns, rows)
    console.print(table)
    _left_out(console, dropped, "--format csv has every column")


def render_flags(console: Console, rows: list[dict]) -> None:
    """CSM flags, one per row: id, account, kind, since, resolved, author, note."""
    table = _table(title=f"{len(rows)} flags", box=box.SIMPLE_HEAD)
    for col in ("flag", "account", "kind", "since", "resolved", "author"):
        table.add_column(col, no_wrap=True)
    table.add_column("note")
    for r in rows:
        table.add_row(
            Text(r["flag_id"]),
            Text(r["account_id"]),
            Text(r["kind"]),
            f"{r['ts']:%Y-%m-%d}",
            f"{r['resolved_at']:%Y-%m-%d}" if r["resolved_at"] else "",
            Text(r["author"] or ""),
            Text(r["note"] or ""),
        )
    console.print(table)


def render_tokens(console: Console, rows: list[dict]) -> None:
    """API tokens (never their secrets), one per row: id, name, scopes, made, expires,
    revoked; ``rows`` as the API's JSON gives them (ISO timestamps)."""
    table = _table(title=f"{len(rows)} tokens", box=box.SIMPLE_HEAD)
    for col in ("id", "name", "scopes", "created", "expires", "revoked"):
        table.add_column(col, no_wrap=col != "name")
    for r in rows:
        table.add_row(
            Text(r["token_id"]),
            Text(r["name"]),
            Text(" ".join(r["scopes"])),
            _day(r.get("created_at")),
            _day(r.get("expires_at")) or "never",
            _day(r.get("revoked_at")),
        )
    console.print(table)


def render_users(console: Console, rows: list[dict]) -> None:
    """Dashboard logins, one per row: user name, role, the CSM they are in the data."""
    table = _table(title=f"{len(rows)} users", box=box.SIMPLE_HEAD)
    for col in ("user", "role", "csm"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(Text(r["username"]), r["role"], Text(r.get("csm") or ""))
    console.print(table)


def render_parked(console: Console, kind: str, listing: dict, width: int = 120) -> None:
    """Segment messages parked as ``rejects`` (with the reason) or ``pending`` (waiting for
    a ``group`` call to link their user to an account), newest first, one per row: when
    received, message id, type, reason or user, the message (compact JSON, cut at
    ``width`` characters); ``listing`` as ``GET /v1/ingest/{kind}`` gives it."""
    import json

    items, total = listing["items"], listing["total"]
    what = "rejected" if kind == "rejects" else "pending"
    shown = f" (showing {len(items)})" if len(items) < total else ""
    table = _table(title=f"{total} {what} messages{shown}", box=box.SIMPLE_HEAD)
    for col in ("received", "message id", "type", "reason" if kind == "rejects" else "user"):
        table.add_column(col, no_wrap=col != "reason")
    table.add_column("message")
    for r in items:
        message = r.get("message")
        text = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
        if len(text) > width:
            text = text[: width - 3] + "..."
        table.add_row(  # Text: what a sender wrote is never read as markup
            _day(r.get("received_at")),
            Text(str(r.get("message_id") or "")),
            Text(str(r.get("type") or "")),
            Text(str(r.get("reason" if kind == "rejects" else "user_id") or "")),
            Text(text),
        )
    console.print(table)


def _day(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else ""


def render_suggestion(console: Console, s) -> None:
    """The suggested metrics by pillar with their AUC and anchors, what was left out and
    why (notes on stderr), and the file written."""
    if s.observations:
        what = (
            f"{s.observations:,} accounts at {s.as_of:%Y-%m-%d}"
            if s.snapshot
            else f"{s.observations:,} observations at {len(s.dates)} dates "
            f"{s.dates[0]:%Y-%m-%d} .. {s.dates[-1]:%Y-%m-%d}"
        )
        console.print(
            f"judged against {s.outcome}{'' if s.snapshot else ' within ' + s.horizon} on "
            f"{what}, {s.positives:,} with {s.outcome} (outcomes up to {s.as_of:%Y-%m-%d})",
            highlight=False,
            markup=False,
        )
    table = _table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    for col, justify in [
        ("pillar", "left"),
        ("metric", "left"),
        ("AUC", "right"),
        ("healthy", "left"),
        ("anchors", "left"),
        ("weight", "right"),
    ]:
        table.add_column(col, justify=justify)
    for m in sorted(s.metrics, key=lambda m: (m.merged_into is not None, m.pillar)):
        anchors = (
            f"bad {m.bad:g}, good {m.good:g}" if m.kind == "linear" else f"{len(m.map)} values"
        )
        table.add_row(
            Text(m.pillar),
            Text(m.name),
            "-" if m.auc is None else f"{m.auc:.3f}",
            Text(m.healthy),
            Text(anchors),
            Text(f"{m.weight:g}" if m.merged_into is None else f"0 (moves with {m.merged_into})"),
        )
    console.print(table)
    for text in s.notes:
        note(text)
    for name, why in s.skipped.items():
        note(f"left out {name}: {why}")
    if s.empty:
        note(f"no rows in {', '.join(s.empty)}: no metric from them")
    say(
        console,
        f"{len(s.scored)} metrics weighted ({len(s.metrics) - len(s.scored)} more at weight 0: "
        f"they move with a stronger one) written to {s.out}; next: `healthscore calibrate` "
        "learns the weights",
    )


def render_probability_fit(console: Console, run) -> None:
    """What a probability fit was fitted on, its curve (score -> probability), its notes
    (on stderr) and the model file written."""
    from healthscore.evaluate.probability import percent

    fit, p = run.fit, run.fit.probability
    console.print(
        f"probability of {p.describe()} ({p.method}) fitted on {p.observations:,} observations "
        f"at {len(fit.dates)} dates from {fit.dates[0]:%Y-%m-%d} to {fit.dates[-1]:%Y-%m-%d}, "
        f"{p.events:,} followed by {p.outcome} (outcomes up to {p.fitted_until})",
        highlight=False,
        markup=False,
    )
    table = _table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("score", justify="right")
    table.add_column(escape(f"p({p.describe().split()[0]})"), justify="right")
    for x, y in p.points:
        table.add_row(f"{x:g}", percent(y))
    console.print(table)
    for text in fit.notes:
        note(text)
    say(
        console,
        f"written to {run.model.file}; model version {run.model.version[:12]} unchanged "
        "(the curve is fitted to a version, not part of it): its stored history still applies",
    )
