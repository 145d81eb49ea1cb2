"""Answer parsing and the strict format check shared by every task family.

    from deepretrieval.tasks.answer_parsing import parse_answer
    text = "<think>\\n" + completion          # the assistant pre-fill + what the model generated
    parsed = parse_answer(text, key="query")  # or key="sql"
    parsed.ok, parsed.format_ok, parsed.value, parsed.reason

The model answers `<think> ... </think> <answer> {"query": "..."} </answer>`. Two checks, kept
apart because the paper's rewards score them apart:

* **format** (`check_format`): exactly one `<think>`, one `</think>`, one `<answer>`, one
  `</answer>`, in that order. This is the original's `validate_response_structure`
  (pat-jj/DeepRetrieval, code/verl/utils/reward_score/pubmed.py and every sibling), applied to
  the assistant turn: the original splits the decoded sequence at "<|im_start|>assistant" and
  checks everything after it, pre-filled "<think>" included; we check the pre-fill + completion,
  which is the same text without depending on the chat template.
* **answer** (`parse_answer`): the content of the *last* `<answer>...</answer>` (original's
  `extract_solution`, regex `<answer>(.*?)</answer>` with DOTALL, last match, stripped), parsed
  as JSON that must be an object holding `key` with a non-empty string value.

Without reasoning (`reasoning=False`, the prompts' answer-only variant) the format is exactly one
`<answer>` and one `</answer>`, in that order, and no think tag.

Where we deviate from the original, and why:
* Empty / whitespace-only query or SQL is an error. The original skips scoring when the answer
  text is empty (`if format_correct and answer_text`) and so *rewards* an empty answer with the
  bare format bonus (+1 for literature search); an empty query retrieves nothing.
* A non-string value (`{"query": 3}`, `{"query": ["a"]}`) or a non-object JSON is an error; the
  original passes whatever `json.loads` returns on to the engine.
* `{"sql": ...}` in a query task (and `{"query": ...}` in the SQL task) is a missing-key error, as
  in the original's `check_json_format` for the tasks that have one.
Nothing here raises on model output: every failure is a `ParsedAnswer` with `ok=False` and a reason.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class ParsedAnswer:
    format_ok: bool          # tag structure: one think block followed by one answer block
    value: str | None        # the query / SQL string, when the answer parsed
    reason: str              # "" when ok, else what was wrong (for rollout logs)

    @property
    def ok(self) -> bool:
        return self.format_ok and self.value is not None


def check_format(text: str, reasoning: bool = True) -> tuple[bool, str]:
    """(ok, reason): exactly one of each tag, ordered <think> < </think> < <answer> < </answer>;
    without reasoning, one answer block and no think tag."""
    tags = _TAGS if reasoning else (ANSWER_OPEN, ANSWER_CLOSE)
    for tag in _TAGS:
        count = text.count(tag)
        if count != (tag in tags):
            return False, f"{tag} appears {count} times (expected {int(tag in tags)})"
    positions = [text.find(tag) for tag in tags]
    if positions != sorted(positions):
        expected = "<think>...</think><answer>...</answer>" if reasoning else "<answer>...</answer>"
        return False, f"tags out of order (expected {expected})"
    return True, ""


def extract_answer(text: str) -> str | None:
    """Content of the last <answer>...</answer>, stripped; None when there is none."""
    matches = _ANSWER_RE.findall(text)
    return matches[-1].strip() if matches else None


def parse_json_field(answer: str, key: str) -> tuple[str | None, str]:
    """(value, reason) of `key` in the JSON object `answer`; value None on any problem."""
    try:
        data = json.loads(answer)
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, f"answer is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"answer JSON is a {type(data).__name__}, not an object"
    if key not in data:
        return None, f"answer JSON has no {key!r} key (keys: {sorted(data)[:5]})"
    value = data[key]
    if not isinstance(value, str):
        return None, f"{key!r} is a {type(value).__name__}, not a string"
    if not value.strip():
        return None, f"{key!r} is empty"
    return value.strip(), ""


def parse_answer(text: str, key: str, reasoning: bool = True) -> ParsedAnswer:
    """Format check + last-answer JSON parse of an assistant turn (pre-fill + completion)."""
    if not isinstance(text, str):
        return ParsedAnswer(False, None, f"completion is a {type(text).__name__}, not a string")
    format_ok, format_reason = check_format(text, reasoning)
    answer = extract_answer(text)
    if answer is None:
        return ParsedAnswer(format_ok, None, format_reason or "no <answer>...</answer> block")
    value, reason = parse_json_field(answer, key)
    return ParsedAnswer(format_ok, value, format_reason or reason)
