"""The OpenAI Agents SDK (`openai-agents`, on the Responses API by default) running agents
on the embedded model of a real `modelport serve`, through `/v1/responses`.

The 135M model cannot be relied on to choose a tool by itself, so the tool agent is told
to call one (`tool_choice="required"`) and stops at its first tool's result: the run
shows that the call came out as a Responses `function_call` the SDK parsed and ran."""

from __future__ import annotations

import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from tests.conftest import E2E_KEY

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m-instruct"


@pytest.fixture(autouse=True, scope="module")
def _no_tracing() -> None:
    set_tracing_disabled(True)  # it would send traces to OpenAI


def _model(server: str) -> OpenAIResponsesModel:
    client = AsyncOpenAI(base_url=f"{server}/v1", api_key=E2E_KEY, max_retries=0)
    return OpenAIResponsesModel(model=MODEL, openai_client=client)


async def test_an_agent_calls_its_function_tool_and_finishes(server: str) -> None:
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"sunny in {city}"

    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=_model(server),
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=64),
        tool_use_behavior="stop_on_first_tool",
    )
    result = await Runner.run(agent, "What is the weather in Paris?", max_turns=2)
    assert len(cities) == 1 and isinstance(cities[0], str)
    assert result.final_output == f"sunny in {cities[0]}"
    [response] = result.raw_responses
    assert response.response_id is not None and response.response_id.startswith("resp_")
    assert response.usage.input_tokens > 0


async def test_a_streamed_agent_run_finishes_with_the_streamed_text(server: str) -> None:
    agent = Agent(
        name="terse",
        instructions="You are terse.",
        model=_model(server),
        model_settings=ModelSettings(temperature=0, max_tokens=128),
    )
    run = Runner.run_streamed(agent, "Say hello.", max_turns=1)
    deltas = [
        event.data.delta
        async for event in run.stream_events()
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
    ]
    assert deltas and run.final_output == "".join(deltas)
