"""The official `openai` package calls Tollgate's OpenAI-compatible API as it would call OpenAI.

Run by the end-to-end test `calls::the_openai_python_package_calls_models_through_the_queue`,
which passes Tollgate's address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN. Chat
Completions with and without streaming (content, finish reason, the usage chunk), Embeddings as
float and base64 (the same vectors), Responses streamed and not, Models, a bad key, an unknown
model and a tool choice naming no tool offered. Every answer is checked against the package's own
models; it prints one JSON line with the job ids it saw; any failed check raises.
"""

import json
import os

import openai
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

BASE_URL = os.environ["TOLLGATE_OPENAI_BASE_URL"]
client = openai.OpenAI(base_url=BASE_URL, api_key=os.environ["TOLLGATE_TOKEN"], max_retries=0,
                       timeout=30)
MESSAGES = [{"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]
jobs = []

raw = client.chat.completions.with_raw_response.create(model="llama3", messages=MESSAGES,
                                                        max_tokens=4)
jobs.append(raw.headers["x-request-id"])
whole = raw.parse()
ChatCompletion.model_validate(whole.to_dict())
assert whole.choices[0].finish_reason == "length", whole
assert whole.usage.completion_tokens == 4, whole.usage
text = client.chat.completions.create(model="llama3", messages=MESSAGES).choices[0].message.content

pieces, usage = [], None
stream = client.chat.completions.create(model="llama3", messages=MESSAGES, stream=True,
                                        stream_options={"include_usage": True})
jobs.append(stream.response.headers["x-request-id"])
finish = None
for chunk in stream:
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
assert "".join(pieces) == text, (pieces, text)
assert len([p for p in pieces if p]) > 1, pieces
assert finish == "stop" and usage is not None and usage.completion_tokens > 0, (finish, usage)

floats = client.embeddings.create(model="nomic-embed-text", input=["a", "b"],
                                  encoding_format="float")
CreateEmbeddingResponse.model_validate(floats.to_dict())
default = client.embeddings.create(model="nomic-embed-text", input=["a", "b"])  # base64
assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
short = client.embeddings.create(model="nomic-embed-text", input="a", dimensions=8)
assert len(short.data[0].embedding) == 8

answer = client.responses.create(model="llama3", input="Say hello", instructions="Be brief.")
Response.model_validate(answer.to_dict())
kinds = []
with client.responses.stream(model="llama3", input="Say hello", instructions="Be brief.") as events:
    for event in events:
        kinds.append(event.type)
    streamed = events.get_final_response()
assert streamed.output_text == answer.output_text, (streamed.output_text, answer.output_text)
assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
assert "response.output_text.delta" in kinds, kinds

models = [m.id for m in client.models.list()]
assert "llama3" in models and "gpt-4.1-mini" in models, models
Model.model_validate(client.models.retrieve("llama3").to_dict())

refusals = {}
try:
    openai.OpenAI(base_url=BASE_URL, api_key="tg_not_a_token", max_retries=0).models.list()
except openai.AuthenticationError as error:
    refusals["bad_key"] = error.status_code
try:
    client.chat.completions.create(model="no-such-model", messages=MESSAGES)
except openai.NotFoundError as error:
    refusals["unknown_model"] = error.code
try:
    client.chat.completions.create(model="llama3", messages=MESSAGES,
                                   tools=[{"type": "function", "function": {"name": "f"}}],
                                   tool_choice={"type": "function", "function": {"name": "g"}})
except openai.BadRequestError as error:
    refusals["tool_choice"] = error.param

print(json.dumps({"jobs": jobs, "refusals": refusals, "text": text}))
