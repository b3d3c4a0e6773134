"""`langchain-openai` (what many apps are built on) binds tools and asks for structured output through
Tollgate's OpenAI surface.

Run by the end-to-end test `tools::langchain_binds_tools_and_structured_output`, which passes
Tollgate's address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN, and the models to try
in TOLLGATE_MODELS (one routed to Ollama, one to OpenAI, one to an Anthropic account). For each
model: `bind_tools` invoked and streamed (the chunks added up as LangChain does), the tool's result
sent back as a `ToolMessage`, and `with_structured_output` by JSON schema and by function calling.
It prints one JSON line with what it saw; any failed check raises.
"""

import functools
import json
import operator
import os

import pydantic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str, units: str) -> str:
    """The current weather in a city, in units c or f."""
    return f"18°C in {city}"


class Product(pydantic.BaseModel):
    """A catalogue entry."""
    title: str
    keywords: list[str]


seen = {}
for model in os.environ["TOLLGATE_MODELS"].split(","):
    llm = ChatOpenAI(model=model, base_url=os.environ["TOLLGATE_OPENAI_BASE_URL"],
                     api_key=os.environ["TOLLGATE_TOKEN"], max_retries=0, timeout=60)
    with_tools = llm.bind_tools([get_weather])
    ask = [HumanMessage("What is the weather in Paris?")]
    called = with_tools.invoke(ask)
    assert called.tool_calls and called.tool_calls[0]["name"] == "get_weather", called
    arguments = called.tool_calls[0]["args"]
    assert isinstance(arguments["city"], str), arguments

    chunks = list(with_tools.stream(ask))
    streamed = functools.reduce(operator.add, chunks)
    assert [c["name"] for c in streamed.tool_calls] == ["get_weather"], streamed
    assert not streamed.invalid_tool_calls, streamed

    result = get_weather.invoke(arguments)
    after = with_tools.invoke(ask + [called, ToolMessage(result, tool_call_id=called.tool_calls[0]["id"])])
    assert "18°C" in after.content and not after.tool_calls, after

    by_schema = llm.with_structured_output(Product).invoke("Describe a blue mug.")
    assert isinstance(by_schema, Product) and by_schema.keywords, by_schema
    by_call = llm.with_structured_output(Product, method="function_calling").invoke("A red mug.")
    assert isinstance(by_call, Product), by_call
    seen[model] = {"call": called.tool_calls[0]["name"], "title": by_schema.title}

print(json.dumps(seen))
