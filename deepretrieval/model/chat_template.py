"""Chat templates in plain Python: the same text as the models' Jinja templates, without jinja2.

    from deepretrieval.model.chat_template import render_chat
    render_chat([{"role": "user", "content": "Hi"}], "chatml")
    # '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n'
    # '<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
    render_chat(messages, "chatml", assistant_prefix="<think>\\n")   # the assistant turn starts with <think>

Templates (each equal to `transformers`' apply_chat_template with the official Jinja, which the
tests check; tool calls and tool messages are not supported):

* "chatml":  Qwen2.5's template (tokenizer_config.json of Qwen/Qwen2.5-*-Instruct): ChatML, with the
             system turn "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." when
             the conversation does not start with one.
* "smollm2": SmolLM2-Instruct's template (the GGUF's tokenizer.chat_template, identical to
             HuggingFaceTB/SmolLM2-135M-Instruct's): ChatML with the default system turn "You are a
             helpful AI assistant named SmolLM, trained by Hugging Face".
* "qwen3":   Qwen3's hybrid-thinking template (Qwen/Qwen3-*): ChatML without a default system turn;
             an assistant turn after the last user turn keeps its reasoning as
             "<think>\\n...\\n</think>\\n\\n" (from `reasoning_content` or the text before "</think>"),
             earlier ones lose it; `enable_thinking=False` appends an empty think block to the
             generation prompt.
* "llama3":  Llama-3.1/3.2-Instruct's template (tokenizer_config.json of meta-llama/Llama-3.2-3B-
             Instruct, the paper's Llama runs): "<|begin_of_text|>", then a system header that
             always carries "Cutting Knowledge Date: December 2023\\nToday Date: ..." and the
             first message's text when it is a system turn, then one header per turn with the
             content stripped of surrounding whitespace, each ended by "<|eot_id|>". The template
             dates the prompt with the day it is rendered (strftime_now); we always render its
             fallback date, 26 Jul 2024 (LLAMA3_DATE), so a prompt is the same on every day.
"""
from __future__ import annotations

QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

LLAMA3_DATE = "26 Jul 2024"     # the official template's date when strftime_now is not there

# Template name -> the system turn it inserts when the conversation has none (None: inserts nothing).
TEMPLATES: dict[str, str | None] = {
    "chatml": QWEN25_DEFAULT_SYSTEM,
    "smollm2": SMOLLM2_DEFAULT_SYSTEM,
    "qwen3": None,
    "llama3": None,     # its system header is always there, empty of system text when there is none
}
ROLES = ("system", "user", "assistant")


def _turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def _check(messages: list[dict]) -> None:
    if not messages:
        raise ValueError("render_chat needs at least one message")
    for i, message in enumerate(messages):
        if message.get("role") not in ROLES:
            raise ValueError(f"message {i} has role {message.get('role')!r}; supported roles: {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} ({message['role']}) needs a string 'content', got {message.get('content')!r}")
        if message.get("tool_calls"):
            raise ValueError(f"message {i} has tool_calls; tool calls are not supported by these templates")


def _split_reasoning(message: dict) -> tuple[str, str]:
    """Qwen3: (reasoning, answer) of an assistant turn."""
    content = message["content"]
    if message.get("reasoning_content") is not None:
        return message["reasoning_content"], content
    if "</think>" in content:
        reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
        return reasoning, content.split("</think>")[-1].lstrip("\n")
    return "", content


def _render_qwen3(messages: list[dict]) -> str:
    # The last user turn that is not a wrapped tool response: later assistant turns keep their reasoning.
    last_query = len(messages) - 1
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index]["content"]
        if messages[index]["role"] == "user" and not (
                content.startswith("<tool_response>") and content.endswith("</tool_response>")):
            last_query = index
            break
    parts = []
    for index, message in enumerate(messages):
        role = message["role"]
        if role != "assistant":
            parts.append(_turn(role, message["content"]))
            continue
        reasoning, answer = _split_reasoning(message)
        if index > last_query and (index == len(messages) - 1 or reasoning):
            reasoning, answer = reasoning.strip("\n"), answer.lstrip("\n")
            answer = f"<think>\n{reasoning}\n</think>\n\n{answer}"
        parts.append(_turn(role, answer))
    return "".join(parts)


def _llama3_header(role: str) -> str:
    return f"<|start_header_id|>{role}<|end_header_id|>\n\n"


def _render_llama3(messages: list[dict]) -> str:
    has_system = messages[0]["role"] == "system"
    system = messages[0]["content"].strip() if has_system else ""
    text = (f"<|begin_of_text|>{_llama3_header('system')}Cutting Knowledge Date: December 2023\n"
            f"Today Date: {LLAMA3_DATE}\n\n{system}<|eot_id|>")
    return text + "".join(_llama3_header(m["role"]) + m["content"].strip() + "<|eot_id|>"
                          for m in messages[1 if has_system else 0:])


def render_chat(messages: list[dict], template: str, add_generation_prompt: bool = True,
                assistant_prefix: str = "", enable_thinking: bool = True) -> str:
    """The prompt text for `messages` ([{"role": "system"|"user"|"assistant", "content": str}, ...]).

    add_generation_prompt: end with the opening of an assistant turn ("<|im_start|>assistant\\n"; Llama-3's
                           "<|start_header_id|>assistant<|end_header_id|>\\n\\n").
    assistant_prefix:      text the assistant turn starts with, e.g. "<think>\\n" (needs the prompt).
    enable_thinking:       "qwen3" only; False pre-fills an empty "<think>\\n\\n</think>\\n\\n".
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}; known templates: {', '.join(TEMPLATES)}")
    if assistant_prefix and not add_generation_prompt:
        raise ValueError("assistant_prefix pre-fills the generation prompt; it needs add_generation_prompt=True")
    if not enable_thinking and template != "qwen3":
        raise ValueError(f"enable_thinking=False is a switch of the 'qwen3' template, not of {template!r}")
    _check(messages)
    if template == "llama3":
        text = _render_llama3(messages) + (_llama3_header("assistant") if add_generation_prompt else "")
        return text + assistant_prefix
    if template == "qwen3":
        text = _render_qwen3(messages)
    else:
        default_system = TEMPLATES[template]
        head = _turn("system", default_system) if default_system and messages[0]["role"] != "system" else ""
        text = head + "".join(_turn(m["role"], m["content"]) for m in messages)
    if add_generation_prompt:
        text += "<|im_start|>assistant\n"
        if not enable_thinking:
            text += "<think>\n\n</think>\n\n"
    return text + assistant_prefix


def template_name_for(jinja_source: str) -> str | None:
    """Which of our templates a model's Jinja chat template is, by what it writes; None if none is."""
    if SMOLLM2_DEFAULT_SYSTEM in jinja_source:
        return "smollm2"
    if QWEN25_DEFAULT_SYSTEM in jinja_source:
        return "chatml"
    if "<|im_start|>" in jinja_source and "reasoning_content" in jinja_source and "enable_thinking" in jinja_source:
        return "qwen3"
    if "<|start_header_id|>" in jinja_source and "Cutting Knowledge Date: December 2023" in jinja_source:
        return "llama3"
    return None
