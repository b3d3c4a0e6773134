"""The official `ollama` package calls Tollgate's Ollama-compatible API as it would call Ollama.

Run by the end-to-end test `calls::the_ollama_python_package_calls_models_through_the_queue`,
which passes Tollgate's Ollama host and a token in TOLLGATE_OLLAMA_HOST and TOLLGATE_TOKEN. Chat
and generate, streamed and not (the same text either way), embed and the older embeddings, list,
show, ps, version; a model that only OpenAI serves, called the Ollama way; a bad key and an
unknown model. It prints one JSON line with what it saw; any failed check raises.
"""

import json
import os

import ollama

HOST = os.environ["TOLLGATE_OLLAMA_HOST"]
client = ollama.Client(host=HOST, headers={"Authorization": f"Bearer {os.environ['TOLLGATE_TOKEN']}"})
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]

whole = client.chat(model="llama3", messages=MESSAGES, stream=False)
assert whole.done and whole.message.role == "assistant", whole
assert whole.eval_count > 0 and whole.prompt_eval_count > 0, whole
pieces = []
last = None
for part in client.chat(model="llama3", messages=MESSAGES, stream=True):
    pieces.append(part.message.content)
    last = part
assert "".join(pieces) == whole.message.content, (pieces, whole.message.content)
assert len([p for p in pieces if p]) > 1, pieces
assert last.done and last.eval_count == whole.eval_count, last

generated = client.generate(model="llama3", prompt="Say hello", options={"num_predict": 5})
assert generated.done_reason == "length" and generated.eval_count == 5, generated
streamed = "".join(p.response for p in client.generate(model="llama3", prompt="Say hello",
                                                          options={"num_predict": 5}, stream=True))
assert streamed == generated.response, (streamed, generated.response)

vectors = client.embed(model="nomic-embed-text", input=["a", "b"])
assert len(vectors.embeddings) == 2 and vectors.prompt_eval_count > 0, vectors
single = client.embeddings(model="nomic-embed-text", prompt="a")
assert single.embedding == vectors.embeddings[0], single

listed = [m.model for m in client.list().models]
assert "llama3" in listed and "gpt-4.1-mini" in listed, listed
shown = client.show("llama3")
assert shown.details is not None, shown
running = [m.model for m in client.ps().models]

# A model that only OpenAI serves, called the Ollama way: the hybrid.
cloud = client.chat(model="gpt-4.1-mini", messages=MESSAGES, stream=False)
assert cloud.message.content and cloud.eval_count > 0, cloud

refusals = {}
try:
    ollama.Client(host=HOST, headers={"Authorization": "Bearer tg_not_a_token"}).list()
except ollama.ResponseError as error:
    refusals["bad_key"] = error.status_code
try:
    client.chat(model="no-such-model", messages=MESSAGES, stream=False)
except ollama.ResponseError as error:
    refusals["unknown_model"] = error.status_code
try:
    client.chat(model="llama3", messages=MESSAGES, stream=False, format={"type": 12})
except ollama.ResponseError as error:
    refusals["schema"] = error.status_code

print(json.dumps({"refusals": refusals, "running": running, "text": whole.message.content}))
