"""Format check and answer parsing (tasks/answer_parsing.py): every malformed output is a clean
failure with a reason, never an exception."""
import pytest

from deepretrieval.tasks.answer_parsing import check_format, extract_answer, parse_answer

PRE = "<think>\n"


def good(query_json: str = '{"query": "asthma AND budesonide"}') -> str:
    return PRE + "I should search for the drug.\n</think>\n<answer>" + query_json + "</answer>"


def test_well_formed_answer_parses():
    p = parse_answer(good(), "query")
    assert p.ok and p.format_ok and p.value == "asthma AND budesonide" and p.reason == ""


def test_multiline_json_and_whitespace_are_accepted():
    p = parse_answer(PRE + "x</think>\n<answer>\n{\n    \"query\": \"  a OR b \"\n} \n</answer>", "query")
    assert p.ok and p.value == "a OR b"


def test_sql_key():
    p = parse_answer(PRE + "t</think><answer>{\"sql\": \"SELECT 1\"}</answer>", "sql")
    assert p.ok and p.value == "SELECT 1"


@pytest.mark.parametrize("text, reason_part", [
    (PRE + "no answer at all", "</think> appears 0 times"),
    (PRE + "x</think>", "<answer> appears 0 times"),
    (PRE + "x</think><answer>{\"query\": \"a\"}</answer><answer>{\"query\": \"b\"}</answer>", "appears 2 times"),
    (PRE + "x</think><answer><answer>{\"query\": \"a\"}</answer></answer>", "appears 2 times"),
    (PRE + "<think>x</think><answer>{\"query\": \"a\"}</answer>", "<think> appears 2 times"),
    ("x</think><answer>{\"query\": \"a\"}</answer>", "<think> appears 0 times"),
    (PRE + "x<answer>{\"query\": \"a\"}</answer></think>", "out of order"),
    (PRE + "x</think></answer>{\"query\": \"a\"}<answer>", "out of order"),
])
def test_structure_failures(text, reason_part):
    p = parse_answer(text, "query")
    assert not p.format_ok and not p.ok
    assert reason_part in p.reason


def test_two_answers_take_the_last_but_fail_format():
    p = parse_answer(PRE + "x</think><answer>{\"query\": \"a\"}</answer><answer>{\"query\": \"b\"}</answer>", "query")
    assert p.value == "b" and not p.ok


@pytest.mark.parametrize("payload, reason_part", [
    ('{"query": "unterminated}', "not valid JSON"),
    ("query: asthma", "not valid JSON"),
    ("", "not valid JSON"),
    ('{"query": ""}', "'query' is empty"),
    ('{"query": "   "}', "'query' is empty"),
    ('{"sql": "SELECT * FROM t"}', "no 'query' key"),
    ('{"Query": "a"}', "no 'query' key"),
    ('{"query": 3}', "'query' is a int"),
    ('{"query": ["a", "b"]}', "'query' is a list"),
    ('["query", "a"]', "is a list, not an object"),
    ('"just a string"', "is a str, not an object"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
])
def test_answer_failures_keep_format_ok(payload, reason_part):
    p = parse_answer(good(payload), "query")
    assert p.format_ok and p.value is None and not p.ok
    assert reason_part in p.reason


def test_query_json_in_sql_task_is_rejected():
    p = parse_answer(good(), "sql")
    assert p.format_ok and p.value is None and "no 'sql' key" in p.reason


def test_unicode_query_survives():
    p = parse_answer(good('{"query": "Ménière\\u2019s disease AND β-blocker 日本"}'), "query")
    assert p.ok and p.value == "Ménière’s disease AND β-blocker 日本"


@pytest.mark.parametrize("bad", [None, 42, b"<answer>{}</answer>", ["x"]])
def test_non_string_completion_is_a_failure_not_an_exception(bad):
    p = parse_answer(bad, "query")
    assert not p.ok and not p.format_ok and "not a string" in p.reason


def test_check_format_and_extract_answer_directly():
    assert check_format("<think></think><answer></answer>") == (True, "")
    assert extract_answer("<answer> a </answer> junk <answer>\nb\n</answer>") == "b"
    assert extract_answer("<answer>never closed") is None
