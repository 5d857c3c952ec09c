"""Chat templates render like transformers renders them, and untrusted templates
cannot reach outside the sandbox."""

from __future__ import annotations

import pytest

from modelport.errors import TemplateRenderError
from modelport.templates import render_chat

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
