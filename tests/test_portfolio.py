"""The account list as `healthscore score` shows it (:mod:`healthscore.portfolio`): the
order it promises whatever order the database returned the rows in."""

from __future__ import annotations

import pyarrow as pa

from healthscore.model import load_model
from healthscore.portfolio import account_list


def test_the_account_list_breaks_ties_by_account_id_as_arrow_compares_text():
    # the query orders the rows (listed_scores), but PostgreSQL orders text by the
    # database's collation: with en_US, 'a1' comes before 'a-2', whose '-' is a smaller
    # byte; tied rows are put in code point order, NaN and missing scores last as before
    model = load_model(None)
    assert not model.highest_first
    as_returned = pa.table(
        {
            "account_id": ["a1", "a-2", "b", "n2", "n1", "z2", "z1"],
            "score": [10.0, 10.0, 20.0, float("nan"), float("nan"), None, None],
        }
    )
    listed = account_list(model, as_returned, sort="score")
    assert listed["account_id"].to_pylist() == ["a-2", "a1", "b", "n1", "n2", "z1", "z2"]
    assert account_list(model, as_returned, sort="score", limit=2)["account_id"].to_pylist() == [
        "a-2",
        "a1",
    ]
    # rows already in that order come back as they are
    in_order = pa.table({"account_id": ["a-2", "a1", "b"], "score": [10.0, 10.0, 20.0]})
    assert account_list(model, in_order, sort="score") is in_order
