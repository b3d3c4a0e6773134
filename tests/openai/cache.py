"""The official `openai` package meets Tollgate's response cache.

Run by the end-to-end test `cache::the_openai_package_gets_a_streamed_hit_in_pieces`, which starts
Tollgate with the caller's tenant caching and passes its address and a token in
TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN. It asks one question three times: whole (a miss,
stored), streamed (a hit, replayed as a stream of several chunks adding up to the stored answer),
and whole again with `Cache-Control: no-store` (a bypass). It prints one JSON line summing up what
it saw; any failed check raises and exits non-zero.
"""

import json
import os

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

client = openai.OpenAI(
    base_url=os.environ["TOLLGATE_OPENAI_BASE_URL"],
    api_key=os.environ["TOLLGATE_TOKEN"],
    max_retries=0,
    timeout=30,
)
ASK = {
    "model": "llama3",
    "temperature": 0,
    "messages": [{"role": "user", "content": "Describe a teapot for a catalogue."}],
}

raw = client.chat.completions.with_raw_response.create(**ASK)
first = raw.parse()
ChatCompletion.model_validate(first.to_dict())
assert raw.headers["x-tollgate-cache"] == "miss", raw.headers
stored = first.choices[0].message.content
assert stored, first

raw = client.chat.completions.with_raw_response.create(**ASK, stream=True)
assert raw.headers["x-tollgate-cache"] == "hit", raw.headers
pieces = []
finish = None
for chunk in raw.parse():
    ChatCompletionChunk.model_validate(chunk.to_dict())
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        finish = choice.finish_reason or finish
assert "".join(pieces) == stored, (pieces, stored)
assert len(pieces) > 1, f"a streamed hit came as {len(pieces)} piece(s)"
assert finish == "stop", finish

raw = client.chat.completions.with_raw_response.create(
    **ASK, extra_headers={"Cache-Control": "no-store"}
)
assert raw.headers["x-tollgate-cache"] == "bypass", raw.headers
ChatCompletion.model_validate(raw.parse().to_dict())

print(json.dumps({"pieces": len(pieces), "text": stored, "calls": 3}))
