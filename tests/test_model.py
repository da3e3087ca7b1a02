"""Model files: every invalid example fails with the message in its header; versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import healthscore as hs
from healthscore.model import json_schema, load_model_text

MODELS = Path(__file__).parent / "models"
INVALID = sorted((MODELS / "invalid").glob("*.yaml"))
VALID = sorted((MODELS / "valid").glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} must state its error in line 1"
    return first.removeprefix("# error: ")


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_model_reports_file_line_key_and_reason(path):
    with pytest.raises(hs.ModelError) as info:
        hs.load_model(path)
    message = str(info.value).replace(str(path.parent) + "/", "")
    assert re.search(_expected(path), message), message


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_models_load(path):
    assert len(hs.load_model(path).version) == 64


def test_default_model_has_four_pillars_with_framework_weights():
    m = hs.load_model()
    assert m.pillar_weights() == pytest.approx(
        {"usage": 0.30, "relationship": 0.25, "support": 0.20, "financial": 0.25}
    )
    assert 8 <= len(m.scored_metrics()) <= 12
    assert m.pillar_weights("enterprise") != m.pillar_weights("smb")


def test_all_problems_are_reported_together():
    with pytest.raises(hs.ModelError) as info:
        load_model_text(
            """
metrics:
  a: {from: usage_events, aggregate: count(nosuch), window: 30d}
  b: {from: nowhere, aggregate: count(), window: 30d}
pillars:
  p: {weight: 1, metrics: {a: {weight: 1, bad: 0, good: 1}, c: {weight: 1, bad: 0, good: 1}}}
"""
        )
    text = str(info.value)
    assert text.startswith("3 problems:")
    assert "unknown name 'nosuch'" in text
    assert "unknown table 'nowhere'" in text
    assert "unknown metric 'c'" in text


def test_version_ignores_comments_key_order_label_and_weight_scale():
    a = load_model_text(
        """
name: one
metrics:
  u: {from: usage_events, aggregate: count(), window: 30d}
  t: {from: tickets, aggregate: count()}
pillars:
  usage: {weight: 30, metrics: {u: {weight: 1, bad: 0, good: 10}}}
  support: {weight: 20, metrics: {t: {weight: 2, bad: 5, good: 0}}}
"""
    )
    b = load_model_text(
        """
# a comment
pillars:
  usage: {metrics: {u: {good: 10, bad: 0, weight: 5}}, weight: 0.6}
  support: {weight: 0.4, metrics: {t: {weight: 1, bad: 5, good: 0}}}
metrics:
  t: {from: tickets, aggregate: count()}
  u: {window: 30d, from: usage_events, aggregate: count()}
name: two
"""
    )
    assert a.version == b.version
    c = load_model_text(
        """
metrics:
  u: {from: usage_events, aggregate: count(), window: 30d}
  t: {from: tickets, aggregate: count()}
pillars:
  usage: {weight: 30, metrics: {u: {weight: 1, bad: 0, good: 11}}}
  support: {weight: 20, metrics: {t: {weight: 2, bad: 5, good: 0}}}
"""
    )
    assert c.version != a.version


def test_json_schema_describes_metrics_and_pillars():
    schema = json_schema()
    text = json.dumps(schema)
    assert schema["title"] == "healthscore model"
    assert "change_vs" in text and "if_previous_zero" in text
    assert "metrics" in schema["properties"] and "pillars" in schema["properties"]


def test_version_ignores_pillar_labels_and_metric_units():
    base = """
metrics:
  u: {from: usage_events, aggregate: count(), window: 30d%s}
pillars:
  usage: {weight: 1%s, metrics: {u: {weight: 1, bad: 0, good: 10}}}
"""
    assert (
        load_model_text(base % ("", "")).version
        == load_model_text(base % (", unit: events", ", label: Product usage")).version
    )


def test_version_ignores_metric_labels_and_band_names_but_not_bands():
    base = """
metrics:
  u: {from: usage_events, aggregate: count(), window: 30d%s}
pillars:
  usage: {weight: 1, metrics: {u: {weight: 1, bad: 0, good: 10}}}
%s
"""
    plain = load_model_text(base % ("", "")).version
    named = base % (", label: Events (30 days)", "band_names: {green: fine, red: at risk}")
    assert load_model_text(named).version == plain
    assert load_model_text(base % ("", "bands: {green: 70, yellow: 50}")).version != plain


def test_every_metric_of_the_shipped_models_has_a_label():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [None, *sorted((root / "examples").glob("*/healthscore.yaml"))]
    assert len(files) >= 3
    for f in files:
        model = hs.load_model(f) if f is not None else hs.load_model()
        unlabelled = [m for m, spec in model.spec.metrics.items() if not spec.label]
        assert not unlabelled, f"{f or 'default model'}: no label for {unlabelled}"


def test_a_column_outside_an_aggregate_call_is_a_model_error():
    with pytest.raises(hs.ModelError, match="column 'quantity' must be inside an aggregate"):
        load_model_text(
            """
metrics:
  x: {from: usage_events, aggregate: count() + quantity, window: 30d}
pillars: {p: {weight: 1, metrics: {x: {weight: 1, bad: 0, good: 1}}}}
"""
        )


def test_a_key_yaml_reads_as_a_number_is_located_on_its_own_line():
    with pytest.raises(hs.ModelError) as info:
        load_model_text(
            """
metrics:
  u: {from: usage_events, aggregate: count(), window: 30d}
pillars:
  usage: {weight: 1, metrics: {u: {weight: 1, bad: 0, good: 10}}}
segments:
  by: segment
  weights:
    1:
      usgae: 2
"""
        )
    assert str(info.value).startswith("<string>:10: segments.weights.1.usgae: unknown pillar")
