"""The official `ollama` package calls tools and asks for structured answers through Tollgate.

Run by the end-to-end test `tools::the_ollama_python_package_calls_tools_and_parses_answers`, which
passes Tollgate's Ollama host and a token in TOLLGATE_OLLAMA_HOST and TOLLGATE_TOKEN, and the models
to try in TOLLGATE_MODELS (one routed to Ollama, one to OpenAI, one to an Anthropic account). For
each model: a tool given as a Python function, whole and streamed, the result sent back with only
`tool_name` (as the package does), and `format` from a pydantic model on chat and generate, streamed
and not. It prints one JSON line with what it saw; any failed check raises.
"""

import json
import os

import ollama
import pydantic

client = ollama.Client(host=os.environ["TOLLGATE_OLLAMA_HOST"],
                       headers={"Authorization": f"Bearer {os.environ['TOLLGATE_TOKEN']}"})
MODELS = os.environ["TOLLGATE_MODELS"].split(",")


def get_weather(city: str, units: str) -> str:
    """The current weather in a city.

    Args:
        city: The city's name.
        units: c or f.
    """
    return f"18°C in {city}"


class Product(pydantic.BaseModel):
    title: str
    keywords: list[str]
    price: float


ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
seen = {}

for model in MODELS:
    whole = client.chat(model=model, messages=ASK, tools=[get_weather], stream=False)
    calls = whole.message.tool_calls
    assert calls and calls[0].function.name == "get_weather", whole.message
    arguments = calls[0].function.arguments
    assert isinstance(arguments, dict) and isinstance(arguments["city"], str), arguments
    result = get_weather(**arguments)
    history = ASK + [whole.message, {"role": "tool", "tool_name": "get_weather", "content": result}]
    after = client.chat(model=model, messages=history, tools=[get_weather], stream=False)
    assert "18°C" in after.message.content and not after.message.tool_calls, after.message

    streamed = []
    for part in client.chat(model=model, messages=ASK, tools=[get_weather], stream=True):
        streamed.extend(part.message.tool_calls or [])
        assert not part.message.content, part
    assert [c.function.name for c in streamed] == ["get_weather"], streamed
    assert isinstance(streamed[0].function.arguments, dict), streamed

    schema = Product.model_json_schema()
    chat = client.chat(model=model, format=schema, stream=False, messages=[
        {"role": "user", "content": "Describe a blue tea mug."}])
    product = Product.model_validate_json(chat.message.content)
    pieces = [p.message.content for p in client.chat(model=model, format=schema, stream=True,
                                                     messages=[{"role": "user",
                                                                "content": "A red mug."}])]
    Product.model_validate_json("".join(pieces))
    generated = client.generate(model=model, prompt="Describe a mug.", format=schema)
    Product.model_validate_json(generated.response)
    loose = client.generate(model=model, prompt="Answer in JSON.", format="json")
    assert isinstance(json.loads(loose.response), dict), loose.response
    seen[model] = {"call": calls[0].function.name, "title": product.title}

print(json.dumps(seen))
