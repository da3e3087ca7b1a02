"""A metric's value in words, with its unit: the one formatter explanations, tables and
reports share.

Place in the flow: ``core``, below ``engine`` (change summaries) and ``views`` (tables,
reports). A unit is the model's ``unit:`` of the metric; ``%`` shows a fraction as a
percentage, any other unit follows the number.

>>> [value_text(v) for v in (0.4242, 12.345, 3, "gold", None, True)]
['0.42', '12.3', '3', 'gold', 'none', 'yes']
>>> [value_text(v, "%") for v in (-0.4, 0.05, 0)], value_text(7.5, "days")
(['-40%', '5.0%', '0%'], '7.50 days')

A count of one takes the singular of a common plural unit (other units stay as written):

>>> [value_text(1, "months"), value_text(-1, "days"), value_text(2, "months"), value_text(1, "GB")]
['1 month', '-1 day', '2 months', '1 GB']
"""

from __future__ import annotations

#: the singular of the plural units models commonly write, for a count of one ("1 month",
#: not "1 months"); a unit not listed is shown as the model writes it
SINGULAR = {
    plural: plural[:-1]
    for plural in (
        "seconds minutes hours days weeks months years quarters tickets seats users "
        "licenses events logins sessions meetings calls emails visits escalations accounts "
        "invoices payments points projects reports integrations"
    ).split()
}


def value_text(v, unit: str | None = None) -> str:
    """``v`` as a sentence shows it: two decimals below 10, one above; ``%`` in percent."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not isinstance(v, int | float):
        return str(v)
    if unit == "%":
        return f"{v:.0%}" if abs(v) >= 0.1 or v == 0 else f"{v:.1%}"
    text = (f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}") if isinstance(v, float) else str(v)
    if unit and text in ("1", "-1"):
        unit = SINGULAR.get(unit, unit)
    return f"{text} {unit}" if unit else text
