"""The paper's prompts, verbatim from the reference's data builders, in a chat frame or the raw frame.

    from deepretrieval.tasks.prompts import build_prompt
    p = build_prompt("scifact", "0-dimensional biomaterials show inductive properties.")
    p.messages          # ({"role": "system", ...}, {"role": "user", ...})
    p.assistant_prefix  # "Let me think step by step. \\n<think>\\n" -- the model continues from here
    build_prompt("bird", question, schema=..., knowledge=..., meta={"split": "test", "id": "7"})
    build_prompt("scifact", claim, frame="raw").text    # the reference's exact prompt string

Texts: pat-jj/DeepRetrieval (commit 001a563d), code/data_preprocess/*.py, `INSTRUCTION` and
`make_prefix`, kept character for character (typos, stray quotes and the leading newline of the
user turn included); tests/test_tasks_fidelity.py pins every template against a copy of the
reference's strings and docs/FIDELITY.md lists the source of each one. Templates by experiment:
  literature search   literature (pubmed.py), ctgov (ctgov.py)
  evidence seeking    evidence (nq_serini.py), evidence_tqa_squad (triviaqa.py = squad.py)
  classic IR, BM25    scifact, nfcorpus, fever, hotpotqa, msmarco_beir (<name>.py)
  classic IR, dense   scifact_dense, nfcorpus_dense, fever_dense, hotpotqa_dense,
                      msmarco_beir_dense (dense/<name>.py)
  MS MARCO subsets    msmarco_sparse, msmarco_dense (msmarco_sub.py, sparse / dense mode)
  text-to-SQL         sql (spider.py, bird.py; BIRD adds its "External Knowledge" line)

Two frames (`task.prompt_frame`):
* "chat" (default): a system turn, a user turn and a pre-filled assistant turn, rendered by the
  model's own chat template, so any chat model works. The user turn is the reference's user text;
  `assistant_prefix` is what the reference writes at the start of the assistant turn.
* "raw": `Prompt.text`, the reference's prompt string itself, which the trainer tokenizes as
  is (verl tokenizes the string with add_special_tokens=False). The reference writes ChatML by
  hand and, for most tasks, never closes the user turn: the "\\nAssistant: Let me ..." line sits
  inside it, and its released checkpoints were trained on that text. ctgov.py has no ChatML at
  all. With Qwen's ChatML template the two frames give the same string for the tasks whose
  reference closes the user turn (MS MARCO subsets, PubMed, SQL).
Without reasoning (`task.reasoning = false`, the paper's "w/o reasoning" ablation, and what a
135M model can follow), the think instructions and the JSON example give way to one line asking
for the answer alone, and the assistant turn is pre-filled up to the opening quote of the answer
value (`<answer>{"query": "`), so the model's first token is already its query; the template's
notes (e.g. on Boolean operators) stay. The format check then wants one answer block and no think
tags (tasks/answer_parsing.py).
A prompt is rl's `deepretrieval.rl.interfaces.Prompt`, the one contract between tasks and the
trainer. Rewards check `assistant_prefix + completion` (tasks/answer_parsing.py) in both frames:
the reference checks the text after the first "Assistant:" (or "<|im_start|>assistant"), which
holds the same tags.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

from deepretrieval.rl.interfaces import Prompt

from .answer_parsing import ANSWER_CLOSE, ANSWER_OPEN

# The system sentence comes in three spellings in the reference: nfcorpus.py, fever.py, hotpotqa.py,
# msmarco_beir.py and their dense/ twins say "think ... provide"; scifact.py, dense/scifact.py,
# nq_serini.py, triviaqa.py, squad.py, msmarco_sub.py say "thinks ... provides"; spider.py and
# bird.py say "think ... provides".
SYSTEM = ("You are a helpful assistant. You first think about the reasoning process in the mind "
          "and then provide the user with the answer.")
SYSTEM_THINKS = ("You are a helpful assistant. You first thinks about the reasoning process in the mind "
                 "and then provides the user with the answer.")
SYSTEM_SQL = ("You are a helpful assistant. You first think about the reasoning process in the mind "
              "and then provides the user with the answer.")
LITERATURE_SYSTEM = ("A conversation between User and Assistant. The User asks a question, and the "
                     "Assistant solves it. The Assistant first thinks about the reasoning process in "
                     "the mind and then provides the User with the answer.")

# pubmed.py / ctgov.py INSTRUCTION
LITERATURE_INSTRUCTION = """The Assistant is a clinical specialist. He is conducting research and doing a medical literature review. His task is to create query terms for a search URL to find relevant literature on PubMed or ClinicalTrials.gov.

The research is defined using the PICO framework:
P: Patient, Problem or Population - Who or what is the research about?
I: Intervention - What is the main intervention or exposure being considered?
C: Comparison - What is the intervention being compared to?
O: Outcome - What are the relevant outcomes or effects being measured?
"""

_EXAMPLE_QUERY = '<answer>\n{\n    "query": "...."\n} \n</answer>. \n'
_EXAMPLE_THINK = "<think>\n[thinking process]\n</think>\n"
_SHOW_WORK = ("Show your work in <think> </think> tags. Your final response must be in JSON format "
              "within <answer> </answer> tags. For example,\n")
_BOOLEAN = "Note: The query should use Boolean operators (AND, OR) and parentheses for grouping terms appropriately."
BOOLEAN_NOTE = _BOOLEAN + "\n"
# triviaqa.py, squad.py
KEEP_GOOD_NOTE = _BOOLEAN + " You don't need to rewrite the query when the query is already good.\n"
MSMARCO_SPARSE_NOTE = _BOOLEAN + '"\n'                                      # msmarco_sub.py (its stray quote)
MSMARCO_DENSE_NOTE = ("Note: Given a question, your need to retain the original query while expanding it "
                      "with additional semantically relevant information, to retrieve documents that can "
                      "help answer the question. If no useful expansion is needed, return the original "
                      "query as is.\n")                                     # msmarco_sub.py, dense mode

LITERATURE_FORMAT = ("The Assistant should show his thinking process in <think> </think> tags. The "
                     "Assistant should return the final answer in JSON format in <answer> </answer> "
                     "tags, \nFor example:\n" + _EXAMPLE_THINK + _EXAMPLE_QUERY + BOOLEAN_NOTE)
QUERY_FORMAT_WITH_THINK = _SHOW_WORK + _EXAMPLE_THINK + _EXAMPLE_QUERY     # + a note: nq_serini.py, msmarco_sub.py
QUERY_FORMAT = _SHOW_WORK + _EXAMPLE_QUERY + BOOLEAN_NOTE                  # classic IR, BM25
DENSE_FORMAT = _SHOW_WORK + _EXAMPLE_QUERY                                 # classic IR, dense/

SQL_INSTRUCTION = ("You are a SQL query writing expert. Your task is to write the SQL query for the "
                   "user query to retrieve data from a database.\n")
SQL_NOTE = ("Note: Using valid SQLite and understanding External Knowledge, answer the following "
            "questions for the tables provided above.\n\n")
SQL_FORMAT = ("Show your work in <think> </think> tags. Your final response must be in JSON format "
              "within <answer> </answer>. For example,\n" + _EXAMPLE_THINK
              + '<answer>\n{\n    "sql": "SELECT ... (in one line)"\n} \n</answer>. \n')

STEP_BY_STEP = "Let me think step by step. \n<think>\n"
REWRITE = "Let me rewrite the query with reasoning. \n<think>\n"

# What the raw frame writes between the input and the assistant prefix.
OPEN_TAIL = "\nAssistant: "                                # the user turn is never closed
CLOSED_TAIL = "<|im_end|>\n<|im_start|>assistant\n"        # msmarco_sub.py, pubmed.py, spider.py, bird.py
MSMARCO_BEIR_DENSE_TAIL = "\n<|im_end|>\n<|im_start|>assistant: "   # dense/msmarco_beir.py
FRAMES = ("chat", "raw")


@dataclass(frozen=True)
class PromptTemplate:
    instruction: str          # the task instruction that opens the user turn
    format_text: str          # how to answer (think/answer tags, JSON example, notes)
    input_header: str         # the line introducing the input ("Here's the claim:")
    assistant_prefix: str     # pre-filled start of the assistant turn ("...<think>\n" in every template)
    system: str = SYSTEM
    answer_key: str = "query"
    raw_tail: str = OPEN_TAIL     # raw frame: the text between the input and the assistant prefix
    raw_chatml: bool = True       # raw frame: ChatML system + user header (False: ctgov.py's plain text)


def _classic(instruction: str, header: str, system: str = SYSTEM) -> PromptTemplate:
    return PromptTemplate(instruction, QUERY_FORMAT, header, STEP_BY_STEP, system=system)


def _dense(given: str, purpose: str, header: str, system: str = SYSTEM, **kwargs) -> PromptTemplate:
    instruction = (f"You are an expert in generating queries for dense retrieval. Given {given}, your task "
                   "is to retain the original query while expanding it with additional semantically "
                   f"relevant information{purpose}. If no useful expansion is needed, return the "
                   "original query as is.")
    return PromptTemplate(instruction, DENSE_FORMAT, header, STEP_BY_STEP, system=system, **kwargs)


_EVIDENCE = ("You are a query rewriting expert. Your task is to create query terms for user query to find "
             "relevant literature in ")
_MSMARCO = ("You are a query rewriting expert. Your task is to augment the user query to find relevant "
            "literature in a corpus with ")
_LITERATURE_HEADER = "User: The research is defined by the following PICO:"

TEMPLATES: dict[str, PromptTemplate] = {
    # literature search from a scientific claim instead of a PICO (ours: the SciFact corpus behind
    # the offline PubMed-syntax backend; the instruction and format are pubmed.py's)
    "literature_claim": PromptTemplate(LITERATURE_INSTRUCTION.split("\n\nThe research is defined")[0] + "\n",
                                       LITERATURE_FORMAT, "User: Find papers that support or refute this "
                                       "scientific claim:", "\nAssistant: Let me solve this step by step. \n<think>\n",
                                       system=LITERATURE_SYSTEM, raw_tail=CLOSED_TAIL),
    # literature search: PubMed (pubmed.py, ChatML) and ClinicalTrials.gov (ctgov.py, plain text)
    "literature": PromptTemplate(LITERATURE_INSTRUCTION, LITERATURE_FORMAT, _LITERATURE_HEADER,
                                 "\nAssistant: Let me solve this step by step. \n<think>\n",
                                 system=LITERATURE_SYSTEM, raw_tail=CLOSED_TAIL),
    "ctgov": PromptTemplate(LITERATURE_INSTRUCTION, LITERATURE_FORMAT, _LITERATURE_HEADER,
                            "Let me solve this step by step. \n<think>\n", system=LITERATURE_SYSTEM,
                            raw_chatml=False),
    # evidence seeking: nq_serini.py; triviaqa.py and squad.py (the same text)
    "evidence": PromptTemplate(_EVIDENCE + "a Wikipedia corpus using BM25.\n",
                               QUERY_FORMAT_WITH_THINK + BOOLEAN_NOTE, "Here's the user query:", REWRITE,
                               system=SYSTEM_THINKS),
    "evidence_tqa_squad": PromptTemplate(_EVIDENCE + "a massive corpus.\n", QUERY_FORMAT_WITH_THINK + KEEP_GOOD_NOTE,
                                         "Here's the user query:", REWRITE, system=SYSTEM_THINKS),
    # classic IR with BM25 (scifact.py, nfcorpus.py, fever.py, hotpotqa.py, msmarco_beir.py)
    "scifact": _classic("You are a query generating expert. Given a scientific claim, your task is to create "
                        "query terms to retrieve documents that support or refute the claim.",
                        "Here's the scientific claim:", system=SYSTEM_THINKS),
    "nfcorpus": _classic("You are an expert in query generation. Given a question, your task is to create "
                         "query terms to retrieve relevant documents that best answer the question.",
                         "Here's the question:"),
    "fever": _classic("You are an expert in query generation. Given a claim, your task is to create query "
                      "terms to retrieve documents that support or refute the claim.", "Here's the claim:"),
    "hotpotqa": _classic("You are an expert in query generation. Given a multi-hop question, your task is "
                         "to create query terms to retrieve documents that can help answer the question.",
                         "Here's the question:"),
    "msmarco_beir": _classic("You are an expert in query generation. Given a web search query, your task is "
                             "to create query terms to retrieve relevant passages that answer the query.",
                             "Here's the claim:"),
    # classic IR with a dense retriever (dense/*.py)
    "scifact_dense": _dense("a scientific claim", "", "Here's the scientific claim:", system=SYSTEM_THINKS),
    "nfcorpus_dense": _dense("a question", ", to retrieve relevant documents that best answer the question",
                             "Here's the question:"),
    "fever_dense": _dense("a claim", ", to retrieve documents that support or refute the claim",
                          "Here's the claim:"),
    "hotpotqa_dense": _dense("a multi-hop question", ", to retrieve documents that can help answer the question",
                             "Here's the question:"),
    "msmarco_beir_dense": _dense("a web search query", ", to retrieve relevant passages that answer the query",
                                 "Here's the web search query:", raw_tail=MSMARCO_BEIR_DENSE_TAIL),
    # MS MARCO health / science / tech subsets (msmarco_sub.py), sparse and dense retrieval modes
    "msmarco_sparse": PromptTemplate(_MSMARCO + "sparse retrieval.\n", QUERY_FORMAT_WITH_THINK + MSMARCO_SPARSE_NOTE,
                                     "Here's the user query:", "\n" + REWRITE, system=SYSTEM_THINKS,
                                     raw_tail=CLOSED_TAIL),
    "msmarco_dense": PromptTemplate(_MSMARCO + "dense retrieval.\n", QUERY_FORMAT_WITH_THINK + MSMARCO_DENSE_NOTE,
                                    "Here's the user query:", "\n" + REWRITE, system=SYSTEM_THINKS,
                                    raw_tail=CLOSED_TAIL),
    # SQL (spider.py, bird.py)
    "sql": PromptTemplate(SQL_INSTRUCTION, SQL_FORMAT, "Here's the user query:",
                          "Let me write the SQL query with reasoning. \n<think>\n", system=SYSTEM_SQL,
                          answer_key="sql", raw_tail=CLOSED_TAIL),
}


def answer_only_prefix(key: str) -> str:
    """The assistant pre-fill without reasoning: the answer block opened up to the value's quote."""
    return ANSWER_OPEN + json.dumps({key: ""})[:-2]


def _answer_only_format(template: PromptTemplate) -> str:
    """The format text without reasoning: one line asking for the answer alone, then whatever
    notes the template's own format text ends with (the Boolean-operator note, for one)."""
    notes = "".join(note for note in (BOOLEAN_NOTE, KEEP_GOOD_NOTE, MSMARCO_SPARSE_NOTE, MSMARCO_DENSE_NOTE)
                    if template.format_text.endswith(note))
    example = ANSWER_OPEN + json.dumps({template.answer_key: "...."}) + ANSWER_CLOSE
    return (f"Respond with the answer alone, in JSON format within <answer> </answer> tags, with no "
            f"reasoning and no other text. For example, {example}\n" + notes)


def pico_text(pico: dict) -> str:
    """The original's `convert_dict_to_str`: "P: ...\\nI: ...\\nC: ...\\nO: ...\\n"."""
    return "".join(f"{k}: {pico.get(k, '')}\n" for k in "PICO")


def _sql_context(schema: str, knowledge: str | None) -> str:
    text = f"Database Schema:\n{schema}\n"
    if knowledge is not None:                       # BIRD has evidence; Spider has none
        text += f"External Knowledge: {knowledge}\n"
    return text + SQL_NOTE


def _template(name: str, reasoning: bool) -> PromptTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; choose from {sorted(TEMPLATES)}")
    t = TEMPLATES[name]
    if reasoning:
        return t
    return replace(t, format_text=_answer_only_format(t), assistant_prefix=answer_only_prefix(t.answer_key))


def _user_text(t: PromptTemplate, input_text: str, *, schema: str | None = None, knowledge: str | None = None) -> str:
    """The reference's user-turn text for one input (the input verbatim, not stripped)."""
    if t.answer_key == "sql":
        if schema is None:
            raise ValueError("the SQL prompt needs the database schema (schema=...)")
        middle = _sql_context(schema, knowledge)
    else:
        middle = "\n"
    # Every reference INSTRUCTION starts with a newline, so the user turn does too.
    return "\n" + t.instruction + middle + t.format_text + f"\n{t.input_header}\n" + input_text


def build_prompt(template: str, input_text: str, *, schema: str | None = None, knowledge: str | None = None,
                 meta: dict | None = None, frame: str = "chat", reasoning: bool = True) -> Prompt:
    """The prompt of `template` for one input: chat turns + assistant pre-fill, or the raw string;
    `meta` is JSON-able ({"split", "id"} for tasks); `reasoning=False` asks for the answer alone."""
    if frame not in FRAMES:
        raise ValueError(f"unknown prompt frame {frame!r}; choose from {FRAMES}")
    t = _template(template, reasoning)
    user = _user_text(t, input_text, schema=schema, knowledge=knowledge)
    if frame == "raw":
        head = f"<|im_start|>system\n{t.system}<|im_end|>\n<|im_start|>user\n" if t.raw_chatml else t.system + "\n"
        return Prompt(text=head + user + t.raw_tail + t.assistant_prefix, assistant_prefix=t.assistant_prefix,
                      meta=dict(meta or {}))
    return Prompt(messages=({"role": "system", "content": t.system}, {"role": "user", "content": user}),
                  assistant_prefix=t.assistant_prefix, meta=dict(meta or {}))
