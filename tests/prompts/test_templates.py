"""Chat templates render like transformers renders them, and untrusted templates
cannot reach outside the sandbox."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelport.errors import TemplateRenderError
from modelport.prompts import budget, sandbox
from modelport.prompts.templates import render_chat, render_chat_async, substitute_bindings

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def render(template: str, **extra: object) -> str:
    return render_chat(template, MESSAGES, bos_token="<s>", eos_token="</s>", extra=extra or None)


def test_renders_messages_and_the_generation_prompt() -> None:
    assert render(CHATML) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_kwargs_reach_the_template() -> None:
    assert render("{{ greeting }} {{ messages|length }}", greeting="hello") == "hello 2"


def test_bos_and_eos_tokens_are_available() -> None:
    assert render("{{ bos_token }}x{{ eos_token }}") == "<s>x</s>"


def test_kwargs_may_not_replace_the_messages() -> None:
    with pytest.raises(TemplateRenderError, match="messages"):
        render(CHATML, messages=[])


def test_raise_exception_in_a_template_is_a_render_error() -> None:
    with pytest.raises(TemplateRenderError, match="no system role"):
        render("{{ raise_exception('no system role') }}")


def test_syntax_errors_are_render_errors() -> None:
    with pytest.raises(TemplateRenderError, match="does not compile"):
        render("{% for m in messages %}")


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__.__init__.__globals__ }}",
        "{{ raise_exception.__globals__['__builtins__'] }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% set x = messages.append({'role': 'system'}) %}",
        "{% for i in range(10**9) %}{% endfor %}",
    ],
)
def test_sandbox_escapes_are_refused(escape: str) -> None:
    with pytest.raises(TemplateRenderError):
        render(escape)


# --- bounded rendering: no template may freeze the server or take its memory ---------


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}Hi", "loops more than"),
        ("{{ 'a' * 10**9 }}", "repeating a value"),
        ("{{ [1] * 10**9 }}", "repeating a value"),
        ("{{ 10 ** 100000 }}", "size limit for numbers"),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "joining these values",
        ),
        ("{% for i in range(90000) %}{{ 'x' * 100 }}{% endfor %}", "output is over the limit"),
        ("{{ 'x'|center(10**9) }}", "width of"),
        ("{{ '%2000000000s' % 'x' }}", "format width"),
        ("{{ '{:>2000000000}'.format('x') }}", "format width"),
        # Loops over the messages' own text: no range() to count, but every loop step is.
        (
            "{% for m in messages %}{% for c in m.content %}{% for d in m.content %}{% endfor %}{% endfor %}"
            "{% endfor %}",
            "loops more than",
        ),
    ],
)
def test_costly_templates_are_refused_naming_the_limit(template: str, limit: str) -> None:
    messages = [{"role": "user", "content": "Hi there. " * 500}]
    with pytest.raises(TemplateRenderError, match="too costly") as refused:
        render_chat(template, messages, bos_token="", eos_token="")
    assert limit in str(refused.value)


def test_a_model_setting_placeholder_is_bounded_too() -> None:
    with pytest.raises(TemplateRenderError, match="too costly"):
        substitute_bindings({"headers": {"x-note": "{{ note * 10**9 }}"}}, {"note": "a"})


def test_a_typical_hugging_face_template_still_renders_exactly() -> None:
    template = (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ message['content'] + eos_token }}{% endif %}"
        "{% if loop.last and add_generation_prompt %}{% endif %}{% endfor %}"
    )
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "?"},
    ]
    assert (
        render_chat(template, turns, bos_token="<s>", eos_token="</s>")
        == "<s>[INST] Hi [/INST]Hello</s>[INST] ? [/INST]"
    )
    with pytest.raises(TemplateRenderError, match="must alternate"):
        render_chat(template, turns[1:], bos_token="<s>", eos_token="</s>")


def test_range_may_not_be_replaced_by_the_caller() -> None:
    with pytest.raises(TemplateRenderError, match="range"):
        render("{{ range }}", range=list)


# Each builds (or would spend) far more than any limit with a single operation or a
# few loop steps; none may get as far as allocating it.
BIG = "{% set ns = namespace(s='x' * 1000000) %}"


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        ("{{ 10 ** (10 ** 10) }}", "size limit for numbers"),
        ("{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}", "numbers"),
        # `~` joins as `+` does.
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "joining these values with ~",
        ),
        # Macros and {% set %} blocks gather their output in a list and join it at the end.
        (
            BIG + "{% macro m() %}{% for i in range(1000) %}{{ ns.s }}{% endfor %}{% endmacro %}{% set x = m() %}",
            "macro",
        ),
        (BIG + "{% set x %}{% for i in range(1000) %}{{ ns.s }}{% endfor %}{% endset %}", "macro or block"),
        # A list that shares its parts is small in memory and huge as text.
        (
            "{% set ns = namespace(l=['x' * 1000]) %}{% for i in range(50) %}{% set ns.l = [ns.l, ns.l] %}"
            "{% endfor %}{{ ns.l }}",
            "writing a value out",
        ),
        (
            "{% set ns = namespace(l=['x']) %}{% for i in range(50) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
            "{{ ns.l|tojson }}",
            "writing JSON",
        ),
        (BIG + "{{ ns.s.replace('', ns.s) }}", "replacing text"),
        (BIG + "{{ ns.s|replace('', ns.s) }}", "replacing text"),
        (BIG + "{{ ns.s.join([ns.s] * 1000) }}", "joining these values"),
        (BIG + "{{ ([ns.s] * 1000)|join }}", "joining these values"),
        ("{{ 'x'.ljust(10 ** 10) }}", "width of"),
        ("{{ 'x'.zfill(10 ** 10) }}", "width of"),
        ("{{ (1).to_bytes(10 ** 10, 'big') }}", "to_bytes"),
        ("{{ '%*s' % (10 ** 10, 'x') }}", "format width"),
        ("{{ '%.2000000000f' % 1.5 }}", "format width"),
        ("{{ '%2000000000s'|format('x') }}", "format width"),
        ("{{ '{:{w}}'.format('x', w=10 ** 10) }}", "format width"),
        ("{{ ('{:1000000}' * 1000).format(*range(1000)) }}", "format width"),
        ("{{ ('\n' * 100000)|indent('x' * 100000) }}", "indenting text"),
        ("{{ [1]|slice(10 ** 10)|list }}", "parts"),
        ("{{ [1]|batch(10 ** 10, 0)|list }}", "parts"),
        ("{% for c in 'a' * 1000000 %}{% endfor %}{% for c in 'a' * 1000000 %}{% endfor %}", "loops more than"),
        ("{% for i in range(60000) %}{% endfor %}{% for i in range(60000) %}{% endfor %}", "range()"),
        (
            "{% for m in messages %}{% for c in m.content * 200 %}{% for d in m.content * 200 %}{% endfor %}"
            "{% endfor %}{% endfor %}",
            "loops more than",
        ),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "too deeply"),
    ],
)
def test_amplifying_templates_are_refused_naming_the_limit(template: str, limit: str) -> None:
    with pytest.raises(TemplateRenderError, match="too costly") as refused:
        render(template)
    assert limit in str(refused.value)


def test_recursive_loops_count_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # With time to spare, the steps of the loops that `loop(...)` starts are what run out.
    monkeypatch.setattr(budget, "MAX_RENDER_SECONDS", 60.0)
    template = "{% for x in 'a' * 1000 recursive %}{% if loop.depth < 3 %}{{ loop('a' * 1000) }}{% endif %}{% endfor %}"
    with pytest.raises(TemplateRenderError, match="too costly: it loops more than"):
        render(template)


def test_the_clock_ends_a_render_that_stays_within_every_other_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "MAX_RENDER_SECONDS", 0.0)
    with pytest.raises(TemplateRenderError, match="too costly: it ran longer than 0 s"):
        render(CHATML)


def test_10_to_the_10_to_the_10_associates_to_the_left_in_jinja() -> None:
    # (10 ** 10) ** 10, a 101-digit number: harmless, and still rendered.
    assert render("{{ 10 ** 10 ** 10 }}") == "1" + "0" * 100


def test_lipsum_is_not_offered() -> None:
    with pytest.raises(TemplateRenderError):
        render("{{ lipsum(10 ** 6, max=10 ** 6) }}")


def test_a_long_conversation_still_renders() -> None:
    # Larger than the base size limit: the limit grows with what the request sends.
    long = [{"role": "user", "content": "word " * 600_000}]
    prompt = render_chat(CHATML, long, bos_token="", eos_token="")
    assert len(prompt) > budget.MAX_SIZE


def test_renders_in_threads_have_their_own_budgets() -> None:
    # Each render uses 60% of the range() budget: shared, two would be refused.
    template = "{% for i in range(60000) %}{% endfor %}{{ messages|length }}"
    results: list[str | Exception] = []

    def one() -> None:
        try:
            results.append(render(template))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["2"] * 4
    assert render(template) == "2"  # and nothing carries over to the next render


def test_render_chat_async_renders_in_a_worker_thread() -> None:
    async def main() -> str:
        return await render_chat_async(CHATML, MESSAGES, bos_token="", eos_token="")

    assert asyncio.run(main()) == render(CHATML)


def test_bindings_share_one_budget_across_a_settings_tree() -> None:
    settings = {"a": "{% for i in range(60000) %}{% endfor %}", "b": ["{% for i in range(60000) %}{% endfor %}"]}
    with pytest.raises(TemplateRenderError, match=r"a model setting is too costly: .*range"):
        substitute_bindings(settings, {})
    assert substitute_bindings({"url": "https://{{ host }}/v1", "n": 3}, {"host": "h"}) == {
        "url": "https://h/v1",
        "n": 3,
    }


# Real templates, in the style of the ones model cards ship: the bounded sandbox must
# render them exactly as Jinja's own sandbox does.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{{ bos_token }}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n<tools>' }}{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\n</tools><|im_end|>\n' }}{%- endif %}"
    "{%- set ns = namespace(last_user=0) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first and tools %}{%- continue %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content }}"
    "{%- for call in message.tool_calls or [] %}"
    "{{- '\n<tool_call>\n{\"name\": \"' ~ call.name ~ '\", \"arguments\": ' ~ call.arguments|tojson ~ '}' }}"
    "{%- endfor %}"
    "{%- if loop.index0 == ns.last_user %}{{- ' (%d of %d)' % (loop.index, loop.length) }}{%- endif %}"
    "{{- '<|im_end|>' + ('\n' if not loop.last else '') }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '\n<|im_start|>assistant\n' }}{%- endif %}"
)
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "  What's the weather in Paris? <b>&</b> "},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"name": "weather", "arguments": {"city": "Paris", "units": ["C", "F"]}}],
    },
    {"role": "user", "content": "Thanks!"},
]
TOOL_LIST = [{"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


@pytest.mark.parametrize("template", [CHATML, LLAMA3, MISTRAL, TOOLS])
def test_real_templates_render_exactly_as_in_the_plain_sandbox(template: str) -> None:
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    plain.globals["raise_exception"] = sandbox.raise_exception
    variables = {"bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": True, "tools": TOOL_LIST}
    expected = plain.from_string(template).render(messages=CONVERSATION, **variables)
    got = render_chat(template, CONVERSATION, bos_token="<s>", eos_token="</s>", extra={"tools": TOOL_LIST})
    assert got == expected
    assert got  # and not trivially
