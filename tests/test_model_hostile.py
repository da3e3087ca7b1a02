"""Hostile and ambiguous model files (issue 15: untrusted files cannot hang or fool the
tool): what the scoring query cannot hold, and numbers or keys YAML reads as something
else, are refused when the model loads, naming the line and what is wrong.
"""

from __future__ import annotations

import pytest

import fixtures
import healthscore as hs
from healthscore.errors import ModelError
from healthscore.model import load_model_text

HEAD = """\
metrics:
  n: {from: usage_events, aggregate: count(), window: 30d}
  t: {from: tickets, aggregate: count(), window: 30d}
"""
PILLARS = """\
pillars:
  p: {weight: 1, metrics: {n: {weight: 1, bad: 0, good: 10}}}
  q: {weight: 1, metrics: {t: {weight: 1, bad: 5, good: 0}}}
"""


def _refused(text: str) -> str:
    with pytest.raises(ModelError) as e:
        load_model_text(text, file="m.yaml")
    return str(e.value)


# --- names: each names columns of the scoring query ------------------------------------

NAMES_REFUSED = {
    # both became one column: "Binder Error: Duplicate struct entry name" when scoring
    "metrics differ in case": (
        HEAD + "  N: {formula: n * 2}\n" + PILLARS,
        "m.yaml:4: metrics.N: metric names 'n' and 'N' differ only in case",
    ),
    # "Target schema's field names are not matching" when scoring
    "pillars differ in case": (
        HEAD + PILLARS.replace("  q:", "  P:"),
        "m.yaml:6: pillars.P: pillar names 'p' and 'P' differ only in case",
    ),
    "rules differ in case": (
        HEAD + PILLARS + "rules:\n  r: {when: n > 1, add: 5}\n  R: {when: n > 2, add: 5}\n",
        "m.yaml:9: rules.R: rule names 'r' and 'R' differ only in case",
    ),
    "scorecard pillars differ in case": (
        HEAD
        + PILLARS
        + "scorecards:\n  other:\n    pillars:\n"
        + "      u: {weight: 1, metrics: {n: {weight: 1, bad: 0, good: 10}}}\n"
        + "      U: {weight: 1, metrics: {t: {weight: 1, bad: 5, good: 0}}}\n",
        "m.yaml:11: scorecards.other.pillars.U: pillar names 'u' and 'U' differ only in case",
    ),
    # the engine's own columns: a traceback (Duplicate column name 'score')
    "metric named score": (
        HEAD + "  score: {formula: n * 2}\n" + PILLARS,
        "m.yaml:4: metrics.score: metric name 'score' is a column of the scores",
    ),
    "metric named As_Of": (
        HEAD + "  As_Of: {formula: n * 2}\n" + PILLARS,
        "metric name 'As_Of' is a column of the scores",
    ),
    # <metric>__norm is the normalised value of <metric>: a traceback
    "metric named n__norm": (
        HEAD + "  n__norm: {formula: n * 2}\n" + PILLARS,
        "m.yaml:4: metrics.n__norm: a metric name is letters, digits and _ (not __)",
    ),
    # rule__<r>__contribution: rule a__contribution was rule a's points
    "rule named a__contribution": (
        HEAD + PILLARS + "rules:\n  a__contribution: {when: n > 1, add: 5}\n",
        "m.yaml:8: rules.a__contribution: a rule name is letters, digits and _ (not __)",
    ),
    # an account column whatever its case: the query held two columns 'segment'
    "metric named Segment": (
        HEAD + "  Segment: {formula: n * 2}\n" + PILLARS,
        "metric name 'Segment' clashes with the account column 'segment'",
    ),
    # PostgreSQL cuts names at 63 bytes: 'column reference ... is ambiguous'
    "long metric name": (
        HEAD + f"  {'y' * 41}: {{formula: n * 2}}\n" + PILLARS,
        "a metric name is at most 40 characters (got 41)",
    ),
    "long pillar name": (
        HEAD + PILLARS + f"  {'é' * 21}: {{weight: 1, metrics: {{}}}}\n",
        "a pillar name is at most 40 bytes (got 42)",
    ),
    "long rule name": (
        HEAD + PILLARS + f"rules:\n  {'r' * 41}: {{when: n > 1, add: 5}}\n",
        "a rule name is at most 40 characters (got 41)",
    ),
    # `score --band red` read 'red' as the green band (the first whose name matched)
    "band names swapped": (
        "band_names: {green: red, yellow: yellow, red: green}\n" + HEAD + PILLARS,
        "m.yaml:1: band_names: green: 'red' is the word for the red band",
    ),
    "two bands one name": (
        "band_names: {green: fine, yellow: Fine, red: bad}\n" + HEAD + PILLARS,
        "green: 'fine' is also the name of the yellow band",
    ),
    # the store matches names whatever their case: 'Segment' could never be found
    # ("declared in the model but the store has no such column") though 'segment' was
    "declared column differs in case": (
        "columns: {accounts: {Segment: string}}\n" + HEAD + PILLARS,
        "m.yaml:1: columns.accounts.Segment: accounts.Segment and accounts.segment differ only",
    ),
    "declared column of the engine": (
        "columns: {accounts: {__flag_x: boolean}}\n" + HEAD + PILLARS,
        "a column name starting with __ is kept for healthscore's own columns",
    ),
    "metric name with a space": (
        HEAD + '  "late invoices": {formula: n * 2}\n' + PILLARS,
        "metrics.late invoices: a metric name is letters, digits and _",
    ),
}


@pytest.mark.parametrize("case", list(NAMES_REFUSED))
def test_names_the_scores_cannot_hold_are_refused(case):
    text, says = NAMES_REFUSED[case]
    assert says in _refused(text)


def test_sql_keywords_are_fine_names(store):
    """Names are quoted wherever they reach SQL: `select`, `order`, `from` score."""
    text = (
        HEAD
        + '  select: {formula: "n + 1"}\n  order: {formula: \'"select" * 2\'}\n'
        + "pillars:\n  from:\n    weight: 1\n    metrics:\n"
        + "      select: {weight: 1, bad: 0, good: 10}\n"
        + "      order: {weight: 1, bad: 0, good: 10}\n"
        + "rules:\n  group: {when: n > 1, add: 5}\n"
    )
    rows = hs.score(store, load_model_text(text), "2025-01-01").to_pylist()
    assert rows and all(r["order"] == 2 * r["select"] for r in rows)


def test_a_true_false_metric_scores_on_postgres():
    """A condition scored with bad/good (false 0, true 1) failed on PostgreSQL: "cannot
    cast type boolean to double precision"; DuckDB read true as 1."""
    text = (
        HEAD
        + "  busy: {formula: n > 0}\n"
        + "pillars:\n  p: {weight: 1, metrics: {busy: {weight: 1, bad: 0, good: 1}}}\n"
    )
    model = load_model_text(text)
    with fixtures.postgres_store() as pg:
        for name, table in fixtures.tables().items():
            pg.load(name, table)
        rows = hs.score(pg, model, "2025-01-01").to_pylist()
    by_id = {r["account_id"]: r for r in rows}
    assert by_id["A1"]["busy"] is True and by_id["A1"]["busy__norm"] == 100.0
    assert any(r["busy"] is False and r["busy__norm"] == 0.0 for r in rows)


def test_score_columns_name_every_fixed_column_of_the_scores():
    """SCORE_COLUMNS (what a metric may not be named) keeps up with the engine's output."""
    from healthscore.engine.scoring import output_columns
    from healthscore.model.schema import SCORE_COLUMNS

    text = (
        HEAD
        + PILLARS
        + "rules:\n  r: {when: n > 1, add: 5}\n"
        + "probability: {points: [[0, 0.5], [100, 0.1]]}\n"
    )
    model = load_model_text(text)
    accounts = set(model.table_schema("accounts"))
    for col in output_columns(model):
        assert col in SCORE_COLUMNS or col in accounts or col in model.spec.metrics or "__" in col


# --- numbers and keys as YAML reads them ------------------------------------------------

NUMBERS_REFUSED = {
    # pydantic's lax mode read true as 1 and false as 0
    "pillar weight true": (
        HEAD + PILLARS.replace("p: {weight: 1", "p: {weight: true"),
        "m.yaml:5: pillars.p.weight: Input should be a valid number (got True)",
    ),
    "bad false": (
        HEAD + PILLARS.replace("bad: 0", "bad: false"),
        "m.yaml:5: pillars.p.metrics.n.bad: Input should be a valid number (got False)",
    ),
    "band green true": (
        "bands: {green: true, yellow: 0}\n" + HEAD + PILLARS,
        "m.yaml:1: bands.green: Input should be a valid number (got True)",
    ),
    "rule add true": (
        HEAD + PILLARS + "rules:\n  r: {when: n > 1, add: true}\n",
        "m.yaml:8: rules.r.add: Input should be a valid number (got True)",
    ),
    # quoted text was read as the number it spells
    "weight '80'": (
        HEAD + PILLARS.replace("p: {weight: 1", "p: {weight: '80'"),
        "m.yaml:5: pillars.p.weight: Input should be a valid number (got '80')",
    ),
    # the sum was infinity: every share 0, nothing scored (score null for every account)
    "pillar weights overflow": (
        HEAD + PILLARS.replace("weight: 1, metrics", "weight: 1e308, metrics"),
        "m.yaml:4: pillars: pillar weights add up to more than a number can hold",
    ),
    "metric weights overflow": (
        HEAD
        + "pillars:\n  p: {weight: 1, metrics: {n: {weight: 1e308, bad: 0, good: 10}, "
        + "t: {weight: 1e308, bad: 5, good: 0}}}\n",
        "m.yaml:5: pillars.p.metrics: metric weights add up to more than a number can hold",
    ),
    # good - bad was infinity: every value scored 0
    "bad and good too far apart": (
        HEAD + PILLARS.replace("bad: 0, good: 10", "bad: -1e308, good: 1e308"),
        "m.yaml:5: pillars.p.metrics.n: `bad` (-1e+308) and `good` (1e+308) are too far apart",
    ),
    "quantiles not ascending": (
        HEAD + PILLARS.replace("bad: 0, good: 10", "percentile: {quantiles: [0.5, 0.5]}"),
        "`quantiles` must be strictly ascending (got [0.5, 0.5])",
    ),
    # the backend cannot put a number where text or true/false goes: a traceback when
    # scoring (Cannot compute precedence for `string` and `float64` types)
    "fill on a text metric": (
        HEAD + "  last_event: {from: usage_events, aggregate: last(event), fill: 5}\n" + PILLARS,
        "m.yaml:4: metrics.last_event.fill: `fill` is a number and 'last_event' is string",
    ),
    "fill on a true/false metric": (
        HEAD + "  busy: {formula: n > 2, fill: 1}\n" + PILLARS,
        "m.yaml:4: metrics.busy.fill: `fill` is a number and 'busy' is boolean",
    ),
    # became the segment named 'None'
    "null segment name": (
        HEAD + PILLARS + "segments: {by: segment, weights: {null: {p: 2}}}\n",
        "m.yaml:7: a key is null (empty)",
    ),
    # DuckDB's SQL text ends at a NUL: "unterminated quoted string" when scoring
    "NUL in a where": (
        HEAD.replace("window: 30d}\n  t", "window: 30d, where: \"event = 'a\\0b'\"}\n  t")
        + PILLARS,
        "m.yaml:2: \"event = 'a\\x00b'\" holds a NUL character",
    ),
    "NUL in a label": (
        HEAD.replace("window: 30d}\n  t", 'window: 30d, label: "a\\0b"}\n  t') + PILLARS,
        "m.yaml:2: 'a\\x00b' holds a NUL character",
    ),
    # the file showed base64 and the model filtered on the text it decodes to
    # ("event = 'login'"): what a reviewer reads is not what runs
    "binary tag": (
        HEAD.replace("window: 30d}\n  t", "window: 30d, where: !!binary ZXZlbnQgPSAnbG9naW4n}\n  t")
        + PILLARS,
        "m.yaml:2: a YAML tag (!!binary) is not read here",
    ),
    # !!str 1 is the text '1'; a tag of the reader's choosing is not read either
    "str tag": (
        HEAD + PILLARS.replace("p: {weight: 1", "p: {weight: !env WEIGHT"),
        "m.yaml:5: a YAML tag (!env) is not read here",
    ),
    # Python's int() reads fullwidth digits: "３0d" was 30 days
    "fullwidth duration": (
        HEAD.replace("window: 30d}\n  t", "window: ３0d}\n  t") + PILLARS,
        "m.yaml:2: metrics.n.window: not a duration: '３0d'",
    ),
}


@pytest.mark.parametrize("case", list(NUMBERS_REFUSED))
def test_numbers_and_keys_yaml_reads_otherwise_are_refused(case):
    text, says = NUMBERS_REFUSED[case]
    assert says in _refused(text)


SPECS_REFUSED = {
    # min: true was 1
    "domain min true": (
        "domains: {score: {min: true, max: 5}}\n",
        "s.yaml:1: domains.score.min: Input should be a valid number (got True)",
    ),
    # names are stripped: the second replaced the first, silently
    "map names twice": (
        "map:\n  Score: score\n  'Score ': comment\n",
        "s.yaml:3: map.Score : 'Score' and 'Score ' are the same column",
    ),
    "domains twice": (
        "domains:\n  score: {min: 1, max: 5}\n  ' score': {min: 0, max: 10}\n",
        "s.yaml:3: domains. score: 'score' and ' score' are the same column",
    ),
    "recoded value twice": (
        "map:\n  Kind:\n    to: kind\n    values: {Churned: csat, ' Churned': nps}\n",
        "s.yaml:4: map.Kind.values: 'Churned' is given twice",
    ),
    # became the file column '' (map) or was a Python error without a line
    "null source": ("map: {null: kind}\n", "s.yaml:1: a key is null (empty)"),
    "NUL constant": ('set: {kind: "a\\0b"}\n', "s.yaml:1: 'a\\x00b' holds a NUL character"),
    # matched no column (domains match names exactly): the bound 1-3 was never applied
    "domain of a canonical column in other case": (
        "domains: {Score: {min: 1, max: 3}}\n",
        "s.yaml:1: domains.Score: 'Score' is not a column of surveys; did you mean 'score'?",
    ),
    "empty key": ("set: {kind: nps}\nkey: ''\n", "s.yaml:2: key: `key` ''"),
}


@pytest.mark.parametrize("case", list(SPECS_REFUSED))
def test_load_spec_values_yaml_reads_otherwise_are_refused(case, tmp_path):
    from healthscore.errors import SourceError
    from healthscore.sources import read_spec

    text, says = SPECS_REFUSED[case]
    f = tmp_path / "s.yaml"
    f.write_text(text)
    with pytest.raises(SourceError) as e:
        read_spec(f, "surveys")
    assert says in str(e.value).replace(str(f), "s.yaml")
