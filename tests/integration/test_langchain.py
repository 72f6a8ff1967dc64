"""LangChain against the OpenAI dialect: bind_tools with a forced choice and with_structured_output through
function calling return parsed results (they used to come back empty, with no error)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration


class WeatherArgs(BaseModel):
    # Bounded so that a random-weight model's string ends within max_tokens.
    city: str = Field(max_length=12, description="The city")


@tool(args_schema=WeatherArgs)
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


class Person(BaseModel):
    """A person."""

    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)


def _chat(server: ServerProcess, model: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="not-needed",
        model=model,
        max_tokens=200,
        temperature=0.5,
        max_retries=0,
        timeout=60,
    )


@pytest.mark.parametrize("model", ["demo-tools-gguf", "demo-tools-mlx", "demo-gguf"])
def test_bind_tools_with_a_forced_choice_returns_a_parsed_call(server: ServerProcess, model: str) -> None:
    reply = _chat(server, model).bind_tools([get_weather], tool_choice="any").invoke("weather in Oslo?")
    assert isinstance(reply, AIMessage) and reply.tool_calls, reply
    call = reply.tool_calls[0]
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]


@pytest.mark.parametrize("model", ["demo-tools-gguf", "demo-tools-mlx"])
def test_structured_output_through_function_calling(server: ServerProcess, model: str) -> None:
    person = _chat(server, model).with_structured_output(Person, method="function_calling").invoke("Who?")
    assert isinstance(person, Person) and 0 <= person.age <= 120
