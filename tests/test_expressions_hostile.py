"""Hostile and ambiguous expressions in a model file (issue 15: untrusted files cannot
fool the tool): anything outside the documented expression language is refused when the
model loads, naming the file's line and what is wrong; nothing is read another way.

Each case here was accepted before and then either ran as something else (an argument
dropped, a pattern read as its quoted text, ``IN UNNEST(...)`` as false) or failed in the
backend when scoring.
"""

from __future__ import annotations

import json

import pytest

import healthscore as hs
from healthscore.errors import ModelError
from healthscore.model import load_model_text

#: the model every case edits: line 5 is the `where`, line 8 the formula
MODEL = """\
metrics:
  n:
    from: usage_events
    aggregate: count()
    where: {where}
    window: 30d
  seats: {{from: subscriptions, aggregate: sum(seats)}}
  f: {{formula: {formula}}}
pillars:
  p:
    weight: 1
    metrics: {{n: {{weight: 1, bad: 0, good: 10}}, f: {{weight: 1, bad: 0, good: 10}}}}
"""


def _model(where: str = "event = 'login'", formula: str = "seats * 2") -> str:
    return MODEL.format(where=json.dumps(where), formula=json.dumps(formula))


def _refused(text: str) -> str:
    with pytest.raises(ModelError) as e:
        load_model_text(text, file="m.yaml")
    return str(e.value)


# (expression in `where`, what the error says); line 5 is the `where`
WHERE_REFUSED = [
    # a qualifier beyond table.column was dropped: any database/schema name was accepted
    ("x.usage_events.event = 'a'", "names a database or schema"),
    ("main.other.usage_events.event = 'a'", "names a database or schema"),
    # the pattern was the `this` of whatever stood there: upper('a%') matched "'a%'"
    # (quotes included), a column matched its own name as text
    ("event LIKE upper('a%')", "LIKE takes a quoted pattern"),
    ("event LIKE coalesce('a%', 'b')", "LIKE takes a quoted pattern"),
    ("event LIKE event", "LIKE takes a quoted pattern"),
    ("event LIKE 5", "LIKE takes a quoted pattern"),
    # ran as FALSE
    ("event IN UNNEST(['a'])", "IN takes a list of values"),
    # failed in the backend: Could not convert string 'login' to INT32
    ("event IN (1, 'a')", "IN compares string with int8"),
    # SYMMETRIC was dropped: BETWEEN 5 AND 1 holds for nothing
    ("quantity BETWEEN SYMMETRIC 5 AND 1", "BETWEEN SYMMETRIC is not allowed"),
    # not in the language (LIKE already ignores case), and it kept surrounding spaces
    ("event ILIKE 'a%'", "ILIKE is not allowed"),
    # an extra argument was dropped by the parser
    ("length(event, 2) > 1", "length() takes 1 argument(s), got 2"),
    # the literal was infinity: `quantity > 1e309` held for no row
    ("quantity > 1e309", "1e309 is not a finite number"),
    # float() reads fullwidth digits: `quantity > １０` was quantity > 10
    ("quantity > １０", "'１０' is not a number written with the digits 0-9"),
    # DuckDB's aliases were read as the documented function, and the file named them so
    ("ifnull(event, 'a') = 'a'", "unknown function 'ifnull'"),
    ("len(event) > 1", "unknown function 'len'"),
    # the function is named as written (was 'readcsv', 'regexplike')
    ("read_csv('/etc/passwd') IS NOT NULL", "unknown function 'read_csv'"),
    ("regexp_matches(event, 'a')", "unknown function 'regexp_matches'"),
    # a Cyrillic е looks like e in any editor: the error showed 'evеnt', unknown, and
    # the user saw no difference from the column listed beside it
    ("evеnt = 'a'", "unknown name 'evеnt' (holds U+0435 'е', not ASCII)"),
    ("lоwer(event) = 'a'", "unknown function 'lоwer' (holds U+043E 'о', not ASCII)"),
]


@pytest.mark.parametrize("where,says", WHERE_REFUSED, ids=[w for w, _ in WHERE_REFUSED])
def test_where_outside_the_language_is_refused_with_its_line(where, says):
    msg = _refused(_model(where=where))
    assert "m.yaml:5: metrics.n.where:" in msg
    assert says in msg


# (formula, what the error says); line 8 is the formula
FORMULA_REFUSED = [
    # arguments the parser dropped without a word: ceil(x, 2) ran as ceil(x),
    # round(x, 2, 1) as round(x, 2), log10(x, 2) as log10(x), count(x, y) as count(x)
    ("ceil(seats, 2)", "ceil() takes 1 argument(s), got 2"),
    ("floor(seats, 2)", "floor() takes 1 argument(s), got 2"),
    ("round(seats, 2, 1)", "round() takes 1 to 2 argument(s), got 3"),
    ("log10(seats, 2)", "log10() takes 1 argument(s), got 2"),
    # log(x) with one argument is log10 in some databases and ln in others
    ("log(seats)", "log() takes 2 argument(s), got 1"),
    # `^` and `**` are undocumented (XOR in some dialects)
    ("seats ^ 2", "POWER is not allowed here"),
    # the metric stood in as a NULL literal, which Ibis compares with anything: this
    # failed in the backend when scoring
    ("CASE WHEN seats = 'x' THEN 1 ELSE 0 END", "not comparable"),
    ("seats IN (1, 'a')", "IN compares float64 with string"),
    # Python's messages reached the user
    ("round(seats, seats)", "round() takes a whole number of decimal places"),
    ("days_since(1)", "days_since() takes dates or timestamps"),
    ("seats AND seats", "AND needs conditions (true/false)"),
    # Ibis's own words reached the user ("SearchedCase(cases=(r0 := UnboundTable ...")
    ("CASE WHEN seats THEN 1 ELSE 0 END", "CASE WHEN needs conditions (true/false)"),
    # no flag has an empty kind: it never held
    ("CASE WHEN has_flag(' ') THEN 1 ELSE 0 END", "has_flag() needs a flag kind"),
    ("NOT seats", "NOT needs conditions (true/false)"),
    # a whole number beyond int64 was refused as "out of bounds for Int64" after a
    # trip through a float; 1e20 (a decimal number) too
    ("seats * 99999999999999999999", "too large for a whole number"),
]


@pytest.mark.parametrize("formula,says", FORMULA_REFUSED, ids=[f for f, _ in FORMULA_REFUSED])
def test_formula_outside_the_language_is_refused_with_its_line(formula, says):
    msg = _refused(_model(formula=formula))
    assert "m.yaml:8: metrics.f.formula:" in msg
    assert says in msg


def test_count_with_two_arguments_is_refused():
    """count(x, y) counted x and dropped y."""
    text = _model().replace("aggregate: count()", "aggregate: count(user_id, event)")
    msg = _refused(text)
    assert "m.yaml:4: metrics.n.aggregate: count() takes at most 1 argument, got 2" in msg


def test_numbers_are_read_as_written(store):
    """A whole number is exact (9007199254740993 went through a float and compared as
    ...992); an exponent is a decimal number (1e20 was refused as out of int64 bounds)."""
    text = _model(
        where="quantity < 1e20 AND account_id <> 'none'",
        formula="9007199254740993 - 9007199254740992",
    )
    model = load_model_text(text)
    rows = hs.score(store, model, "2025-01-01").to_pylist()
    scored = [r for r in rows if r["f"] is not None]
    assert scored and all(r["f"] == 1 for r in scored)
    assert any(r["n"] for r in rows)  # the `where` kept rows (1e20 is a number)


STILL_ACCEPTED = [
    "usage_events.event = 'a'",
    "\"event\" = 'a'",
    "event NOT LIKE 'a%'",
    "event IN ('a', 'b')",
    "quantity BETWEEN 1 AND 5",
    "quantity > 1_000",
    "round(quantity, -1) > 10 AND round(quantity) > 0",
]


@pytest.mark.parametrize("where", STILL_ACCEPTED)
def test_the_documented_language_still_loads(where):
    load_model_text(_model(where=where))


def test_aggregates_in_any_case_and_star_still_load():
    text = _model().replace("aggregate: count()", "aggregate: COUNT(*) + count(DISTINCT user_id)")
    load_model_text(text)


def test_exp_and_power_beyond_a_float_score_alike_on_postgres(store):
    """exp() and power() where the result is no finite number have no value (0 below the
    smallest float), on PostgreSQL as on DuckDB: PostgreSQL stopped the whole scoring
    query ("value out of range: overflow", "a negative number raised to a non-integer
    power yields a complex result", "zero raised to a negative power is undefined")."""
    import fixtures

    formulas = {
        "big": "exp(n + 1000)",
        "tiny": "exp(-1000 - n)",
        "complex": "power(-8, 0.5 + n)",
        "zero_neg": "power(0 * n, -1)",
        "over": "power(10, 400 + n)",
        "under": "power(10, -400 - n)",
        "fine": "power(2, 3) + exp(0 * n)",
    }
    text = (
        "metrics:\n  n: {from: usage_events, aggregate: count(), window: 30d}\n"
        + "".join(f'  {k}: {{formula: "{f}"}}\n' for k, f in formulas.items())
        + "pillars:\n  p: {weight: 1, metrics: {n: {weight: 1, bad: 0, good: 10}}}\n"
    )
    model = load_model_text(text)
    want = {r["account_id"]: r for r in hs.score(store, model, "2025-01-01").to_pylist()}
    with fixtures.postgres_store() as pg:
        for name, table in fixtures.tables().items():
            pg.load(name, table)
        got = {r["account_id"]: r for r in hs.score(pg, model, "2025-01-01").to_pylist()}
    assert got.keys() == want.keys()
    for acc, row in want.items():
        for k in formulas:
            assert got[acc][k] == row[k], (acc, k)
        if row["n"] is not None:
            assert (row["big"], row["tiny"], row["complex"], row["zero_neg"]) == (
                None,
                0,
                None,
                None,
            )
            assert (row["over"], row["under"], row["fine"]) == (None, 0, 9)


def test_long_flag_kinds_sharing_a_beginning_score_on_postgres():
    """has_flag('<kind>') reads a column named after the kind: PostgreSQL cut names at 63
    bytes, so two kinds sharing their first 56 characters were one ambiguous column
    ("column reference ... is ambiguous") and nothing scored."""
    import pyarrow as pa

    import fixtures

    long = "k" * 60
    text = (
        "metrics:\n  n: {from: usage_events, aggregate: count(), window: 30d}\n"
        f"  f: {{formula: \"CASE WHEN has_flag('{long}a') THEN 1 "
        f"WHEN has_flag('{long}B') THEN 2 ELSE 0 END\"}}\n"
        "pillars:\n  p: {weight: 1, metrics: {f: {weight: 1, bad: 0, good: 2}}}\n"
    )
    model = load_model_text(text)
    tables = fixtures.tables()
    flags = tables["flags"].to_pylist()
    flags.append({**flags[0], "flag_id": "F9", "account_id": "A3", "kind": f"{long}b"})
    tables["flags"] = pa.Table.from_pylist(flags, schema=tables["flags"].schema)
    with fixtures.postgres_store() as pg:
        for name, table in tables.items():
            pg.load(name, table)
        rows = {r["account_id"]: r for r in hs.score(pg, model, "2025-01-01").to_pylist()}
    assert rows["A3"]["f"] == 2  # the second kind (B: a kind is a category)
    assert rows["A1"]["f"] == 0


def test_a_where_that_is_no_condition_is_one_problem():
    """The aggregate was checked with the bad filter too: a second problem in Ibis's words
    ("types do not fit in 'COUNT()': CountStar(UnboundTable ...")."""
    msg = _refused(_model(where="quantity"))
    assert msg == "m.yaml:5: metrics.n.where: `where` must be a condition (true/false)"
