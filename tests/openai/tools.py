"""The official `openai` package calls tools and asks for structured answers through Tollgate.

Run by the end-to-end test `tools::the_openai_python_package_calls_tools_and_parses_answers`, which
passes Tollgate's address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN, and the models
to try in TOLLGATE_MODELS (one routed to Ollama, one to OpenAI, one to an Anthropic account). For
each model: a tool call, whole and streamed (accumulated by the package's own stream helper),
parallel calls, a tool result round trip, `chat.completions.parse()` with a pydantic model,
`json_object`, and the Responses API's function calls (whole, streamed, round trip) and
`responses.parse()`; then the refusals, each naming its parameter. It prints one JSON line with what
it saw; any failed check raises.
"""

import json
import os

import openai
import pydantic
from openai.types.chat import ChatCompletion

client = openai.OpenAI(base_url=os.environ["TOLLGATE_OPENAI_BASE_URL"],
                       api_key=os.environ["TOLLGATE_TOKEN"], max_retries=0, timeout=60)
MODELS = os.environ["TOLLGATE_MODELS"].split(",")


class GetWeather(pydantic.BaseModel):
    """The current weather in a city."""
    city: str
    units: str


class Product(pydantic.BaseModel):
    title: str
    description: str
    keywords: list[str]
    price: float


WEATHER = openai.pydantic_function_tool(GetWeather, name="get_weather")
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
jobs = []


def tool_calls(model):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=ASK,
                                                            tools=[WEATHER])
    jobs.append(raw.headers["x-request-id"])
    whole = raw.parse()
    ChatCompletion.model_validate(whole.to_dict())
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.id and call.type == "function" and call.function.name == "get_weather", call
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str), arguments

    # The history goes back as the package writes it, with the tool's result.
    history = ASK + [choice.message, {"role": "tool", "tool_call_id": call.id, "content": "18°C"}]
    after = client.chat.completions.create(model=model, messages=history, tools=[WEATHER])
    assert after.choices[0].finish_reason == "stop", after
    assert "18°C" in after.choices[0].message.content, after

    # Streamed: the package's own helper gathers the deltas into the call.
    with client.chat.completions.stream(model=model, messages=ASK, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls", streamed
    parsed = streamed.message.tool_calls[0].function.parsed_arguments
    assert isinstance(parsed, GetWeather), parsed
    assert streamed.message.content in (None, ""), streamed.message

    # Several calls in one turn, each under its own index.
    ask = [{"role": "user", "content": "Weather and time in Paris, in parallel please."}]
    indices, names, finish = set(), {}, None
    for chunk in client.chat.completions.create(model=model, messages=ask, tools=[WEATHER, CLOCK],
                                                stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        assert not delta.content, delta
        for piece in delta.tool_calls or []:
            indices.add(piece.index)
            if piece.function and piece.function.name:
                names[piece.index] = piece.function.name
        finish = chunk.choices[0].finish_reason or finish
    assert indices == {0, 1} and names == {0: "get_weather", 1: "get_time"}, names
    assert finish == "tool_calls", finish

    # A named choice picks that tool.
    named = client.chat.completions.create(
        model=model, messages=ask, tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"], named


def structured(model):
    parsed = client.chat.completions.parse(model=model, response_format=Product, messages=[
        {"role": "user", "content": "Describe a blue tea mug for the catalogue."}])
    product = parsed.choices[0].message.parsed
    assert isinstance(product, Product) and product.keywords, parsed
    jobs.append(parsed.id)
    streamed = []
    with client.chat.completions.stream(model=model, response_format=Product, messages=[
            {"role": "user", "content": "Describe a red tea mug."}]) as stream:
        for event in stream:
            if event.type == "content.delta":
                streamed.append(event.delta)
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Product), final
    assert len(streamed) > 1, streamed
    loose = client.chat.completions.create(
        model=model, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Answer in JSON."}])
    assert isinstance(json.loads(loose.choices[0].message.content), dict), loose


def responses(model):
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city",
            "parameters": GetWeather.model_json_schema(), "strict": False}
    answer = client.responses.create(model=model, input="What is the weather in Paris?",
                                     tools=[tool])
    calls = [item for item in answer.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id, answer.output
    json.loads(calls[0].arguments)
    after = client.responses.create(model=model, tools=[tool], input=[
        {"role": "user", "content": "What is the weather in Paris?"}, *answer.output,
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18°C"}])
    assert "18°C" in after.output_text, after

    kinds = []
    with client.responses.stream(model=model, input="Weather in Paris?", tools=[tool]) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather", final.output
    order = [k for k in kinds if k.startswith("response.output_item")
             or k.startswith("response.function_call")]
    assert order == ["response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done"], kinds
    assert kinds[-1] == "response.completed", kinds

    parsed = client.responses.parse(model=model, input="Describe a green mug.", text_format=Product)
    assert isinstance(parsed.output_parsed, Product), parsed


for model in MODELS:
    tool_calls(model)
    structured(model)
    responses(model)

refusals = {}
cases = {
    "unoffered_choice": dict(tools=[WEATHER], messages=ASK,
                             tool_choice={"type": "function", "function": {"name": "launch"}}),
    "arguments_not_json": dict(messages=ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{city: Paris"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18°C"}]),
    "unanswered_result": dict(messages=ASK + [
        {"role": "tool", "tool_call_id": "nobody", "content": "18°C"}]),
    "bad_schema": dict(messages=ASK, response_format={
        "type": "json_schema", "json_schema": {"name": "p", "schema": {"type": 12}}}),
}
for name, arguments in cases.items():
    try:
        client.chat.completions.create(model=MODELS[0], **arguments)
        raise AssertionError(f"{name} was accepted")
    except openai.BadRequestError as error:
        refusals[name] = error.param

print(json.dumps({"jobs": jobs, "refusals": refusals}))
