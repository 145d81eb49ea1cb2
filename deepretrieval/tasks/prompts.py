"""The paper's prompts: ChatML system turn, task instruction, assistant turn pre-filled to `<think>\\n`.

    from deepretrieval.tasks.prompts import build_prompt
    p = build_prompt("scifact", "0-dimensional biomaterials show inductive properties.")
    p.messages          # ({"role": "system", ...}, {"role": "user", ...})
    p.assistant_prefix  # "Let me think step by step. \\n<think>\\n" -- the model continues from here
    build_prompt("bird", question, schema=..., knowledge=..., meta={"split": "test", "id": "7"})

A `TaskPrompt` has the fields of `deepretrieval.rl.interfaces.Prompt` (messages, assistant_prefix, meta), so the
trainer takes it as is: it renders `messages` with the model's chat template, opens the assistant
turn and appends `assistant_prefix`; rewards check `assistant_prefix + completion`
(tasks/answer_parsing.py), exactly as the original checks everything after "<|im_start|>assistant".

Texts are those of the original data builders (pat-jj/DeepRetrieval, code/data_preprocess/*.py,
`INSTRUCTION` and `make_prefix`), kept verbatim (typos included) except for the frame:
* The original writes ChatML by hand and, for most tasks, never closes the user turn (it appends
  "\\nAssistant: Let me ..." inside it); literature search uses a plain "User:/Assistant:" frame.
  We put the same texts into proper system / user / assistant turns, so any chat template works.
* System text: "You are a helpful assistant. You first think about the reasoning process in the
  mind and then provide the user with the answer." (nfcorpus.py / fever.py / hotpotqa.py
  wording; scifact.py, nq_serini.py say "thinks ... provides"). Literature search's system text is
  the original's "A conversation between User and Assistant..." preamble (pubmed.py, ctgov.py).
* SQL follows the released DeepRetrieval-SQL model card on the Hugging Face hub (= bird.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SYSTEM = ("You are a helpful assistant. You first think about the reasoning process in the mind "
          "and then provide the user with the answer.")

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
BOOLEAN_NOTE = ("Note: The query should use Boolean operators (AND, OR) and parentheses for grouping "
                "terms appropriately.\n")

LITERATURE_FORMAT = ("The Assistant should show his thinking process in <think> </think> tags. The "
                     "Assistant should return the final answer in JSON format in <answer> </answer> "
                     "tags, \nFor example:\n" + _EXAMPLE_THINK + _EXAMPLE_QUERY + BOOLEAN_NOTE)
QUERY_FORMAT_WITH_THINK = _SHOW_WORK + _EXAMPLE_THINK + _EXAMPLE_QUERY + BOOLEAN_NOTE   # nq_serini.py
QUERY_FORMAT = _SHOW_WORK + _EXAMPLE_QUERY + BOOLEAN_NOTE                               # scifact.py, fever.py
SPARSE_NOTE = ("Note: The query will be directly used in a sparse retrieval system, so do not include "
               "any irrelevant terms.\n")                                               # msmarco_sub.py

SQL_INSTRUCTION = ("You are a SQL query writing expert. Your task is to write the SQL query for the "
                   "user query to retrieve data from a database.\n")
SQL_NOTE = ("Note: Using valid SQLite and understanding External Knowledge, answer the following "
            "questions for the tables provided above.\n\n")
SQL_FORMAT = ("Show your work in <think> </think> tags. Your final response must be in JSON format "
              "within <answer> </answer>. For example,\n" + _EXAMPLE_THINK
              + '<answer>\n{\n    "sql": "SELECT ... (in one line)"\n} \n</answer>. \n')

STEP_BY_STEP = "Let me think step by step. \n<think>\n"
REWRITE = "Let me rewrite the query with reasoning. \n<think>\n"


@dataclass(frozen=True)
class PromptTemplate:
    instruction: str          # the task instruction that opens the user turn
    format_text: str          # how to answer (think/answer tags, JSON example, notes)
    input_header: str         # the line introducing the input ("Here's the claim:")
    assistant_prefix: str     # pre-filled start of the assistant turn; always ends in "<think>\n"
    system: str = SYSTEM
    answer_key: str = "query"


TEMPLATES: dict[str, PromptTemplate] = {
    # literature search (pubmed.py, ctgov.py): input is the PICO block
    "literature": PromptTemplate(LITERATURE_INSTRUCTION, LITERATURE_FORMAT,
                                 "User: The research is defined by the following PICO:",
                                 "Let me solve this step by step. \n<think>\n", system=LITERATURE_SYSTEM),
    # evidence seeking (nq_serini.py, triviaqa.py, squad.py)
    "evidence": PromptTemplate(
        "You are a query rewriting expert. Your task is to create query terms for user query to find "
        "relevant literature in a Wikipedia corpus using BM25.\n",
        QUERY_FORMAT_WITH_THINK, "Here's the user query:", REWRITE),
    # classic IR (scifact.py, nfcorpus.py, fever.py, hotpotqa.py, msmarco_beir.py)
    "scifact": PromptTemplate(
        "You are a query generating expert. Given a scientific claim, your task is to create query "
        "terms to retrieve documents that support or refute the claim.",
        QUERY_FORMAT, "Here's the scientific claim:", STEP_BY_STEP),
    "nfcorpus": PromptTemplate(
        "You are an expert in query generation. Given a question, your task is to create query terms "
        "to retrieve relevant documents that best answer the question.",
        QUERY_FORMAT, "Here's the question:", STEP_BY_STEP),
    "fever": PromptTemplate(
        "You are an expert in query generation. Given a claim, your task is to create query terms to "
        "retrieve documents that support or refute the claim.",
        QUERY_FORMAT, "Here's the claim:", STEP_BY_STEP),
    "hotpotqa": PromptTemplate(
        "You are an expert in query generation. Given a multi-hop question, your task is to create "
        "query terms to retrieve documents that can help answer the question.",
        QUERY_FORMAT, "Here's the question:", STEP_BY_STEP),
    "msmarco_beir": PromptTemplate(
        "You are an expert in query generation. Given a web search query, your task is to create "
        "query terms to retrieve relevant passages that answer the query.",
        QUERY_FORMAT, "Here's the claim:", STEP_BY_STEP),
    # MS MARCO health / science / tech subsets (msmarco_sub.py), sparse and dense engines
    "msmarco_sparse": PromptTemplate(
        "You are a query rewriting expert. Your task is to augment the user query to find relevant "
        "literature in a corpus with sparse retrieval.\n",
        _SHOW_WORK + _EXAMPLE_THINK + _EXAMPLE_QUERY + SPARSE_NOTE, "Here's the user query:", REWRITE),
    "msmarco_dense": PromptTemplate(
        "You are a query rewriting expert. Your task is to augment the user query to find relevant "
        "literature in a corpus.\n",
        _SHOW_WORK + _EXAMPLE_THINK + _EXAMPLE_QUERY, "Here's the user query:", REWRITE),
    # SQL (spider.py, bird.py, DeepRetrieval-SQL model card)
    "sql": PromptTemplate(SQL_INSTRUCTION, SQL_FORMAT, "Here's the user query:",
                          "Let me write the SQL query with reasoning. \n<think>\n", answer_key="sql"),
}


@dataclass(frozen=True)
class TaskPrompt:
    messages: tuple[dict[str, str], ...]     # system turn, user turn
    assistant_prefix: str                    # pre-filled start of the assistant turn
    meta: dict[str, Any] = field(default_factory=dict)   # JSON-able: {"split", "id"} for tasks
    text: None = None                        # (rl.interfaces.Prompt's alternative to messages)


def pico_text(pico: dict) -> str:
    """The original's `convert_dict_to_str`: "P: ...\\nI: ...\\nC: ...\\nO: ...\\n"."""
    return "".join(f"{k}: {pico.get(k, '')}\n" for k in "PICO")


def _sql_context(schema: str, knowledge: str | None) -> str:
    text = f"Database Schema:\n{schema}\n"
    if knowledge is not None:                       # BIRD has evidence; Spider has none
        text += f"\nExternal Knowledge: {knowledge}\n"
    return text + SQL_NOTE


def build_prompt(template: str, input_text: str, *, schema: str | None = None,
                 knowledge: str | None = None, meta: dict | None = None) -> TaskPrompt:
    """The system + user turns and the assistant pre-fill of `template` for one input."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; choose from {sorted(TEMPLATES)}")
    t = TEMPLATES[template]
    if t.answer_key == "sql":
        if schema is None:
            raise ValueError("the SQL prompt needs the database schema (schema=...)")
        user = t.instruction + _sql_context(schema, knowledge) + t.format_text
    else:
        user = t.instruction + "\n" + t.format_text
    user += f"\n{t.input_header}\n{input_text.strip()}"
    return TaskPrompt(({"role": "system", "content": t.system}, {"role": "user", "content": user}),
                      t.assistant_prefix, dict(meta or {}))
