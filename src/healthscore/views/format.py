"""Numbers as every view shows them: one money formatter, one number formatter.

Place in the flow: the bottom of ``views``. The terminal tables, the HTML reports and
their charts format figures through these functions, so ARR reads the same everywhere
(``2.8k`` in the terminal is ``2.8k`` in the report). Also the Jinja2 filters of the
report templates (see :func:`healthscore.views.report.page_environment`).
"""

from __future__ import annotations

import re
from datetime import datetime

from healthscore.core.values import value_text

MISSING = "-"  # what a figure that is not there shows as

#: characters that reorder the text around them: the embeddings and overrides (U+202A-E,
#: the "right-to-left override" U+202E among them), the isolates (U+2066-9) and the marks
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
FSI, PDI = "\u2068", "\u2069"  # first strong isolate ... pop directional isolate


def has_bidi(text: str) -> bool:
    """Whether ``text`` holds a character that reorders its neighbours."""
    return not BIDI_CONTROLS.isdisjoint(text)


def isolate(text: str) -> str:
    """``text`` closed off from what is around it when it holds bidirectional controls:
    wrapped in FSI ... PDI, which ends every embedding and override opened inside, so a
    name with U+202E cannot reverse the text after it. A PDI in ``text`` with no isolate
    of its own to end would end the wrapping one early (and let an override after it
    loose): it is dropped; an isolate ``text`` leaves open is ended, so the closing PDI
    ends the wrapping one. Other text is returned as it is.

    >>> isolate("Acme"), isolate("\u202eemca") == "\u2068\u202eemca\u2069"
    ('Acme', True)
    >>> isolate("\u2069\u202eevil") == "\u2068\u202eevil\u2069"
    True
    """
    if not has_bidi(text):
        return text
    if PDI in text or not _ISOLATES.isdisjoint(text):
        kept, depth = [], 0
        for c in text:
            if c in _ISOLATES:
                depth += 1
            elif c == PDI:
                if not depth:
                    continue  # it would end the wrapping isolate
                depth -= 1
            kept.append(c)
        text = "".join(kept) + PDI * depth
    return f"{FSI}{text}{PDI}"


_ISOLATES = frozenset("\u2066\u2067\u2068")  # LRI, RLI, FSI: each ended by a PDI


#: characters a terminal runs rather than shows: C0 controls but tab and line feed (ESC
#: starts the sequences that move the cursor, clear the screen, set the title or the
#: clipboard), DEL and the C1 controls (U+009B is a one-character ESC [)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _control_picture(m: re.Match) -> str:
    code = ord(m.group())
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block: ESC as U+241B
    return "\u2421" if code == 0x7F else "\ufffd"


def show_controls(text: str) -> str:
    """``text`` with the control characters a terminal would run shown as symbols
    (ESC as U+241B), so a name cannot move the cursor, clear the screen or retitle the
    window of whoever reads it.

    >>> show_controls("Acme\\x1b[2J"), show_controls("a\\tb\\nc") == "a\\tb\\nc"
    ('Acme␛[2J', True)
    """
    return _CONTROL.sub(_control_picture, text)


def has_controls(text: str) -> bool:
    """Whether ``text`` holds a character :func:`show_controls` replaces."""
    return _CONTROL.search(text) is not None


def strip_bidi(text: str) -> str:
    """``text`` without bidirectional controls (for chart labels, drawn as SVG text).

    >>> strip_bidi("\u202eAcme\u202c")
    'Acme'
    """
    return "".join(c for c in text if c not in BIDI_CONTROLS) if has_bidi(text) else text


def money(v: float | None) -> str:
    """ARR in a few characters, three significant digits: 950, 2.8k, 1.23M.

    >>> [money(v) for v in (1_234_567, 350_400, 12_345, 2_800, 900, None)]
    ['1.23M', '350k', '12.3k', '2.8k', '900', '-']
    """
    if v is None:
        return MISSING
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.0f}"


def number(v: float | None, spec: str = ".1f") -> str:
    """A figure with a format spec (``.1f``, ``,.2f``, ``.1%``, ``+.1f``); ``-`` when missing.

    >>> [number(72.345), number(0.1234, ".1%"), number(1234.5, ",.2f"), number(None)]
    ['72.3', '12.3%', '1,234.50', '-']
    """
    return MISSING if v is None else format(v, spec)


def metric_value(v, unit: str | None = None) -> str:
    """A metric's raw value in a sentence, with its unit: 0.42, 12.3, 3, -40%, 7.50 days.

    >>> [metric_value(v) for v in (0.4242, 12.345, 3, "gold", None)]
    ['0.42', '12.3', '3', 'gold', 'none']
    >>> metric_value(-0.4, "%"), metric_value(3, "days")
    ('-40%', '3 days')
    """
    return value_text(v, unit)


def date_text(d: datetime | None, spec: str = "%Y-%m-%d") -> str:
    """A date as the pages print it (UTC): 2025-07-01.

    >>> date_text(datetime(2025, 7, 1, 6, 30)), date_text(datetime(2025, 7, 1), "%Y-%m-%d %H:%M")
    ('2025-07-01', '2025-07-01 00:00')
    """
    return MISSING if d is None else format(d, spec)


def weight_text(share: float | None) -> str:
    """A weight (a share of 1) in percent, as the weight tables print it: 12.5 %.

    >>> weight_text(0.125), weight_text(None)
    ('12.5 %', '-')
    """
    return MISSING if share is None else f"{number(share * 100)} %"
