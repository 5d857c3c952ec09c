"""SGP's FlexibleMessageParam: a chat_history message may leave out `role` (a user's)
and a content part its `type` (the one field it carries); anything else stays a 422."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modelport.schemas.inference import ChatCompletionRequest, ImageURLPart, TextPart, UserMessage


def _history(*messages: object) -> list[object]:
    return list(ChatCompletionRequest.model_validate({"chat_history": list(messages), "prompt": "p"}).chat_history)


def test_a_message_without_a_role_is_the_users_and_parts_are_known_by_their_field() -> None:
    [plain, parts] = _history({"content": "hi"}, {"content": [{"text": "a"}, {"image_url": {"url": "http://x/y.png"}}]})
    assert plain == UserMessage(role="user", content="hi")
    assert isinstance(parts, UserMessage) and [type(part) for part in parts.content] == [TextPart, ImageURLPart]


@pytest.mark.parametrize(
    "message",
    [
        {"role": "bot", "content": "x"},
        {"role": 3, "content": "x"},
        {"content": [{"text": "a", "image_url": {"url": "u"}}]},  # two fields: which part is it?
        {"content": [{"detail": "low"}]},
        {"role": "assistant", "content": [{"text": "a"}]},  # an assistant's content is text
    ],
)
def test_what_is_not_flexible_stays_refused(message: object) -> None:
    with pytest.raises(ValidationError):
        _history(message)
