"""Result comparison on hand-made pairs, with the values the official evaluators give
(Spider: test-suite-sql-eval exec_eval.result_eq; BIRD: evaluation.py's set equality)."""
from __future__ import annotations

import pytest

from deepretrieval.sqlexec.compare import (bird_results_match, gold_orders_rows, remove_distinct, results_match,
                             spider_results_match)
from deepretrieval.sqlexec.datasets import load_spider

# (gold, pred, order_matters, spider says, bird says)
PAIRS = {
    "identical": ([(1, "a"), (2, "b")], [(1, "a"), (2, "b")], False, True, True),
    "rows reordered": ([(1,), (2,)], [(2,), (1,)], False, True, True),
    "rows reordered, gold has ORDER BY": ([(1,), (2,)], [(2,), (1,)], True, False, True),
    "ordered and equal": ([(1,), (2,)], [(1,), (2,)], True, True, True),
    "columns swapped": ([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], False, True, False),
    "columns swapped, ordered": ([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True, True, False),
    "no consistent column permutation": ([(1, 2), (3, 4)], [(2, 1), (3, 4)], False, False, False),
    "duplicate counts differ": ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False, True),
    "missing duplicate": ([(1,), (1,), (2,)], [(1,), (2,)], False, False, True),
    "extra duplicate": ([(1,)], [(1,), (1,)], False, False, True),
    "both empty": ([], [], False, True, True),
    "empty vs one row": ([], [(None,)], False, False, False),
    "extra column": ([(1,)], [(1, 1)], False, False, False),
    "NULL equals NULL": ([(None, 1)], [(None, 1)], False, True, True),
    "NULL is not 0": ([(None,)], [(0,)], False, False, False),
    "NULL is not empty text": ([(None,)], [("",)], False, False, False),
    "int equals equal float": ([(1,)], [(1.0,)], False, True, True),
    "int vs equal float in a wider row": ([(1, 10)], [(1.0, 10)], False, True, True),
    "no float tolerance": ([(0.3,)], [(0.1 + 0.2,)], False, False, False),
    "text '1' is not integer 1": ([("1",)], [(1,)], False, False, False),
    "case matters": ([("Paris",)], [("paris",)], False, False, False),
    "bytes vs text": ([(b"a",)], [("a",)], False, False, False),
}


@pytest.mark.parametrize("name", PAIRS)
def test_pairs(name):
    gold, pred, order_matters, spider, bird = PAIRS[name]
    assert spider_results_match(gold, pred, order_matters) is spider
    assert results_match(gold, pred, comparison="spider", order_matters=order_matters) is spider
    assert bird_results_match(gold, pred) is bird
    assert results_match(gold, pred, comparison="bird", order_matters=order_matters) is bird


def test_wide_results_with_repeated_columns_are_fast():
    # 12 identical predicted columns must not make the permutation search factorial (12! = 4.8e8)
    gold = [tuple([i] * 11 + [i + 1]) for i in range(50)]
    pred = [tuple([i] * 12) for i in range(50)]
    assert spider_results_match(gold, pred, False) is False
    assert spider_results_match(gold, [tuple(reversed(r)) for r in gold], False) is True


@pytest.mark.parametrize("sql, expected", [
    ("SELECT name FROM singer ORDER BY age DESC", True),
    ("select name from singer order\n  by age", True),
    ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
    ("SELECT name FROM s ORDER /* why */ BY age", True),
    ("SELECT count(*) FROM c WHERE id = (SELECT id FROM s ORDER BY cap DESC LIMIT 1)", False),
    ("SELECT name FROM s WHERE note = 'order by age'", False),
    ('SELECT "order by" FROM s', False),
    ("SELECT name FROM s -- order by age", False),
    ("SELECT name FROM s", False),
    ("SELECT [order] FROM s GROUP BY x", False),
])
def test_top_level_order_by(sql, expected):
    assert gold_orders_rows(sql) is expected


def test_order_rule_on_spider_gold(spider_dir):
    golds = [e.gold_sql for e in load_spider(spider_dir)]
    ordered = [i for i, sql in enumerate(golds) if gold_orders_rows(sql)]
    # the official rule, 'order by' in sql.lower(), also fires on ORDER BY inside subqueries:
    substring = [i for i, sql in enumerate(golds) if "order by" in sql.lower()]
    assert set(ordered) < set(substring)
    assert sorted(set(substring) - set(ordered)) == [43, 44, 159, 160, 954, 955]
    assert (len(ordered), len(substring)) == (231, 237)


def test_remove_distinct_as_the_official_default():
    sql = "SELECT DISTINCT name, count(distinct x) FROM t WHERE a = 'distinct' AND \"distinct\" > 1 -- distinct"
    assert remove_distinct(sql) == "SELECT  name, count( x) FROM t WHERE a = 'distinct' AND \"distinct\" > 1 -- distinct"
    assert remove_distinct("SELECT distinctive FROM t") == "SELECT distinctive FROM t"


def test_unknown_comparison_is_an_error():
    with pytest.raises(ValueError, match="unknown comparison 'sql'"):
        results_match([], [], comparison="sql")
