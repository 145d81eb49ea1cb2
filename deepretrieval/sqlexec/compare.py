"""Is a predicted result the gold result? Spider's and BIRD's execution-accuracy rules.

    from deepretrieval.sqlexec.compare import results_match
    results_match(gold_rows, pred_rows, comparison="spider", order_matters=gold_orders_rows(gold_sql))

Spider (`comparison="spider"`) follows `result_eq` of the official test-suite evaluator
(taoyds/test-suite-sql-eval, exec_eval.py; the evaluator behind Spider's execution accuracy):
- two empty results are equal (whatever their columns); otherwise the row counts and the
  column counts must be equal;
- rows are a multiset (duplicates count), and a list when order matters;
- columns may come in any order: the results are equal if *some* permutation of the
  predicted columns makes them equal (`SELECT a, b` matches `SELECT b, a`).
Values are compared with Python equality on what the sqlite3 module returns, with no other
normalisation, exactly as the official code does: integers and floats are equal when
numerically equal (1 == 1.0, and they hash alike, so also inside sets), 0.1 + 0.2 != 0.3
(no rounding or tolerance), the text '1' differs from the integer 1, NULL equals NULL.
One deliberate difference: the official quick-reject step sorts each row's values by
`str(v) + str(type(v))`, so a row holding an int in one result and the equal float in the
other can sort differently and be rejected, e.g. (1, 10) vs (1.0, 10); we compare per-column
multisets instead, which rejects only truly different results, so such pairs match here.
Exact float equality has a cost the official evaluator shares: a float SUM/AVG depends on the
order rows are scanned in, in the last bit, so a correct prediction whose plan scans in another
order can mismatch (5 Spider dev gold queries do this: tests/test_sql_eval.py).

The official evaluation.py also rewrites queries before running them: by default it deletes
every DISTINCT keyword from both (`remove_distinct` here; off unless asked for, e.g.
`eval-sql --remove-distinct`, because a reward should judge the query the model wrote; off
is the official `--keep_distinct` behaviour), and it fixes "> =" spacing and replaces
YEAR(CURDATE()), which we do not do (sqlite rejects "> =" and has no CURDATE, so such a
prediction is a pred_error here). Value plugging (`--plug_value`) is not offered.

When order matters: the official code tests `'order by' in gold_sql.lower()`, which also fires
on an ORDER BY inside a subquery or a string literal; we follow the issue's rule and look for
an ORDER BY at the top level of the gold query (`gold_orders_rows`), outside parentheses,
strings, quoted names and comments. An ORDER BY that only picks the argmax inside a subquery
does not order the outer rows, so requiring the gold's arbitrary outer order there would make
a correct prediction wrong.

BIRD (`comparison="bird"`) follows BIRD's evaluation.py: `set(predicted) == set(gold)`,
i.e. rows as a set (duplicates and order ignored), columns in the given order.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Literal, Sequence

Comparison = Literal["spider", "bird"]
COMPARISONS: tuple[str, ...] = ("spider", "bird")

# One token of SQL as far as finding top-level keywords needs: quoted things and comments are
# skipped whole, parentheses counted, words looked at.
_TOKEN = re.compile(r"""
    '(?:[^']|'')*'?      # string literal ('' escapes a quote)
  | "(?:[^"]|"")*"?      # quoted identifier
  | `[^`]*`?             # MySQL-style quoted identifier
  | \[[^\]]*\]?          # MS-style quoted identifier
  | --[^\n]*             # line comment
  | /\*.*?(?:\*/|$)      # block comment
  | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
  | (?P<open>\()
  | (?P<close>\))
  """, re.VERBOSE | re.DOTALL)


def gold_orders_rows(gold_sql: str) -> bool:
    """True when the query has ORDER BY at its top level (so the order of its rows is part of
    the answer). Also true for `SELECT ... UNION SELECT ... ORDER BY x`, which orders the whole."""
    depth = 0
    previous_word = None
    for match in _TOKEN.finditer(gold_sql):
        if match.group("open"):
            depth += 1
        elif match.group("close"):
            depth -= 1
        elif (word := match.group("word")) is not None:
            word = word.upper()
            if depth == 0 and previous_word == "ORDER" and word == "BY":
                return True
            previous_word = word if depth == 0 else None
    return False


def remove_distinct(sql: str) -> str:
    """The query without its DISTINCT keywords (also inside COUNT(DISTINCT x)), as the official
    Spider evaluator rewrites both queries unless run with --keep_distinct. Strings, quoted
    names and comments are left alone."""
    pieces, last = [], 0
    for match in _TOKEN.finditer(sql):
        if (match.group("word") or "").upper() == "DISTINCT":
            pieces.append(sql[last:match.start()])
            last = match.end()
    return "".join(pieces) + sql[last:]


def _column_signature(rows: Sequence[tuple], j: int, ordered: bool):
    values = (row[j] for row in rows)
    return tuple(values) if ordered else Counter(values)


def _column_permutation_exists(gold: Sequence[tuple], pred: Sequence[tuple], order_matters: bool) -> bool:
    n_cols = len(gold[0])
    # A gold column can only be matched by a predicted column holding the same values the same
    # number of times (in the same order when order matters): a sound filter that leaves few
    # candidates, so the search below is fast even for wide results.
    pred_sigs = [_column_signature(pred, j, order_matters) for j in range(n_cols)]
    gold_sigs = [_column_signature(gold, i, order_matters) for i in range(n_cols)]
    candidates = [[j for j in range(n_cols) if pred_sigs[j] == gold_sigs[i]] for i in range(n_cols)]
    # Identical predicted columns (SELECT a, a, ...) are interchangeable: try only one of them
    # at each position, or the search would be factorial in the number of copies.
    pred_cols = [tuple(row[j] for row in pred) for j in range(n_cols)]
    first_copy = [pred_cols.index(col) for col in pred_cols]
    gold_multiset = None if order_matters else Counter(gold)

    def rows_equal(perm: list[int]) -> bool:
        permuted = [tuple(row[j] for j in perm) for row in pred]
        return permuted == list(gold) if order_matters else Counter(permuted) == gold_multiset

    def search(i: int, perm: list[int], used: set[int]) -> bool:
        if i == n_cols:
            return rows_equal(perm)
        tried = set()
        for j in candidates[i]:
            if j in used or first_copy[j] in tried:
                continue
            tried.add(first_copy[j])
            used.add(j)
            perm.append(j)
            if search(i + 1, perm, used):
                return True
            perm.pop()
            used.discard(j)
        return False

    return search(0, [], set())


def spider_results_match(gold: Sequence[tuple], pred: Sequence[tuple], order_matters: bool) -> bool:
    """Spider execution match (see the module docstring)."""
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    return _column_permutation_exists(gold, pred, order_matters)


def bird_results_match(gold: Sequence[tuple], pred: Sequence[tuple]) -> bool:
    """BIRD execution match: the same set of rows."""
    return set(pred) == set(gold)


def results_match(gold: Sequence[tuple], pred: Sequence[tuple], *, comparison: Comparison = "spider",
                  order_matters: bool = False) -> bool:
    """Dispatch on the benchmark's rule; `order_matters` is used by Spider only."""
    if comparison == "spider":
        return spider_results_match(gold, pred, order_matters)
    if comparison == "bird":
        return bird_results_match(gold, pred)
    raise ValueError(f"unknown comparison {comparison!r}: expected one of {COMPARISONS}")
