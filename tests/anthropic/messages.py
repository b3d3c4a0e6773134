"""The official `anthropic` package through Tollgate's Anthropic surface.

Run by the end-to-end tests in `tests/it/anthropic.rs`, which pass the surface's base URL and a
token in TOLLGATE_ANTHROPIC_BASE_URL and TOLLGATE_TOKEN, the models to try in TOLLGATE_MODELS (each
routed to a different upstream), thinking models in TOLLGATE_THINKING_MODELS and a token whose
tenant is held to one request a minute in TOLLGATE_LIMITED_TOKEN. For each model: a message whole
and streamed, tools whole and streamed (`input_json_delta`) with the result sent back, an image;
then thinking whole and streamed, count_tokens, the model list, bearer auth, a bad key, an
unknown model and a rate-limited tenant. It prints one JSON line with what it saw; any failed
check raises.
"""

import base64
import json
import os
import struct
import zlib

import anthropic

BASE_URL = os.environ["TOLLGATE_ANTHROPIC_BASE_URL"]
TOKEN = os.environ["TOLLGATE_TOKEN"]
client = anthropic.Anthropic(base_url=BASE_URL, api_key=TOKEN, max_retries=0)
MODELS = os.environ["TOLLGATE_MODELS"].split(",")
ASK = [{"role": "user", "content": "Say hello."}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]},
}


def png() -> bytes:
    """A 1×1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def texts(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


seen = {}
for model in MODELS:
    whole = client.messages.create(model=model, max_tokens=256, messages=ASK)
    assert whole.type == "message" and whole.role == "assistant", whole
    assert whole.stop_reason == "end_turn", whole
    assert texts(whole) and whole.usage.input_tokens > 0 and whole.usage.output_tokens > 0, whole

    with client.messages.stream(model=model, max_tokens=256, messages=ASK) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, pieces
    assert "".join(pieces) == texts(final), (pieces, final)
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final

    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    called = client.messages.create(model=model, max_tokens=256, messages=ask, tools=[WEATHER])
    assert called.stop_reason == "tool_use", called
    uses = [block for block in called.content if block.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and isinstance(uses[0].input, dict), called
    history = ask + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in called.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                      "content": "18°C, clear"}]},
    ]
    after = client.messages.create(model=model, max_tokens=256, messages=history, tools=[WEATHER])
    assert "18°C" in texts(after) and after.stop_reason == "end_turn", after

    partial = []
    with client.messages.stream(model=model, max_tokens=256, messages=ask, tools=[WEATHER]) as stream:
        for event in stream:
            if event.type == "input_json":
                partial.append(event.partial_json)
        streamed = stream.get_final_message()
    uses = [block for block in streamed.content if block.type == "tool_use"]
    assert uses and uses[0].input == json.loads("".join(partial)), (partial, streamed)
    assert streamed.stop_reason == "tool_use", streamed

    image = base64.b64encode(png()).decode()
    shown = client.messages.create(model=model, max_tokens=256, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
    ]}])
    assert "a PNG" in texts(shown), shown
    seen[model] = {"text": texts(whole), "call": uses[0].name, "image": texts(shown),
                   "usage": whole.usage.model_dump()}

seen["thinking"] = {}
for thinker in os.environ["TOLLGATE_THINKING_MODELS"].split(","):
    thought = client.messages.create(model=thinker, max_tokens=4096, messages=ASK,
                                     thinking={"type": "enabled", "budget_tokens": 1024})
    blocks = [block.type for block in thought.content]
    assert blocks[0] == "thinking" and "text" in blocks, thought
    assert thought.content[0].thinking and thought.content[0].signature, thought
    kinds = []
    with client.messages.stream(model=thinker, max_tokens=4096, messages=ASK,
                                thinking={"type": "adaptive"}) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                kinds.append(event.delta.type)
        streamed = stream.get_final_message()
    assert "thinking_delta" in kinds and "signature_delta" in kinds and "text_delta" in kinds, kinds
    assert kinds.index("signature_delta") < kinds.index("text_delta"), kinds
    assert streamed.content[0].type == "thinking" and streamed.content[0].signature, streamed
    # Its reasoning sent back with the signature it was given is taken.
    again = client.messages.create(model=thinker, max_tokens=4096, thinking={"type": "adaptive"},
                                   messages=ASK + [{"role": "assistant", "content": [
                                       block.model_dump(exclude_none=True) for block in streamed.content]},
                                       {"role": "user", "content": "And again."}])
    assert texts(again), again
    seen["thinking"][thinker] = {"whole": thought.content[0].thinking,
                                 "signature": streamed.content[0].signature}

seen["count_tokens"] = {}
for model in MODELS:
    counted = client.messages.count_tokens(model=model, messages=ASK, tools=[WEATHER])
    assert counted.input_tokens > 0, counted
    seen["count_tokens"][model] = counted.input_tokens

listed = [model.id for model in client.models.list()]
seen["models"] = listed
one = client.models.retrieve(listed[0])
assert one.id == listed[0] and one.display_name, one

bearer = anthropic.Anthropic(base_url=BASE_URL, auth_token=TOKEN, max_retries=0)
assert texts(bearer.messages.create(model=MODELS[0], max_tokens=64, messages=ASK))

refusals = {}
try:
    anthropic.Anthropic(base_url=BASE_URL, api_key="tg_wrong", max_retries=0).messages.create(
        model=MODELS[0], max_tokens=64, messages=ASK)
    raise AssertionError("a bad key was taken")
except anthropic.AuthenticationError as error:
    assert error.status_code == 401 and error.body["error"]["type"] == "authentication_error", error.body
    assert error.request_id, error.response.headers
    refusals["bad_key"] = error.body["error"]["type"]
try:
    client.messages.create(model="no-such-model", max_tokens=64, messages=ASK)
    raise AssertionError("an unknown model answered")
except anthropic.NotFoundError as error:
    assert error.body["type"] == "error" and error.body["error"]["type"] == "not_found_error", error.body
    refusals["unknown_model"] = error.body["error"]["type"]
try:
    client.messages.create(model=MODELS[0], messages=ASK, max_tokens=64, extra_body={"temperature": 7})
    raise AssertionError("a temperature of 7 was taken")
except anthropic.BadRequestError as error:
    assert error.body["error"]["type"] == "invalid_request_error", error.body
    refusals["bad_temperature"] = error.body["error"]["message"].split(":")[0]
limited = anthropic.Anthropic(base_url=BASE_URL, api_key=os.environ["TOLLGATE_LIMITED_TOKEN"],
                              max_retries=0)
try:
    for _ in range(3):
        limited.messages.create(model=MODELS[0], max_tokens=64, messages=ASK)
    raise AssertionError("a tenant over its rate was served")
except anthropic.RateLimitError as error:
    assert error.body["error"]["type"] == "rate_limit_error", error.body
    assert int(error.response.headers["retry-after"]) > 0, error.response.headers
    refusals["rate_limited"] = error.body["error"]["type"]
seen["refusals"] = refusals

print(json.dumps(seen))
