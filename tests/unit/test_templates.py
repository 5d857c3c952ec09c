"""Chat templates render like transformers renders them, and untrusted templates
cannot reach outside the sandbox."""

from __future__ import annotations

import pytest

from modelport.errors import TemplateRenderError
from modelport.templates import render_chat, substitute_bindings

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
        # Loops over the messages' own text: no range() to count, the clock ends it.
        (
            "{% for m in messages %}{% for c in m.content %}{% for d in m.content %}{% endfor %}{% endfor %}"
            "{% endfor %}",
            "ran longer than",
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
