"""The official `openai` package asks for reasoning through Tollgate.

Run by the end-to-end test `reasoning::the_openai_python_package_asks_for_reasoning`, which
passes Tollgate's address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN and the
models in TOLLGATE_MODELS: a thinking model on Ollama, OpenAI's reasoning model (which counts its
reasoning and shows none), an OpenAI model that cannot reason, and an OpenAI-compatible reasoner
(which writes its reasoning as `reasoning_content`). For each: `reasoning_effort` on Chat
Completions whole and streamed, `reasoning` on the Responses API, and nothing asked; then an
effort that does not exist, refused by name. It prints one JSON line with what it saw; any
failed check raises.
"""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["TOLLGATE_OPENAI_BASE_URL"],
                       api_key=os.environ["TOLLGATE_TOKEN"], max_retries=0, timeout=60)
MODELS = os.environ["TOLLGATE_MODELS"].split(",")
ASK = [{"role": "user", "content": "Why is the sky blue on a clear day?"}]


def extra(model_object, name):
    """A field the typed object does not declare (`reasoning_content`), as the package keeps it."""
    return (model_object.model_extra or {}).get(name)


seen = {}
for model in MODELS:
    whole = client.chat.completions.create(model=model, messages=ASK, reasoning_effort="high")
    assert whole.choices[0].message.content, whole
    details = whole.usage.completion_tokens_details
    thinking, text = "", ""
    for chunk in client.chat.completions.create(model=model, messages=ASK,
                                                reasoning_effort="low", stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices:
            thinking += extra(chunk.choices[0].delta, "reasoning_content") or ""
            text += chunk.choices[0].delta.content or ""
    assert text, model
    response = client.responses.create(model=model, input="Why is grass green?",
                                       reasoning={"effort": "medium"})
    kinds = [item.type for item in response.output]
    summary = "".join(part.text for item in response.output if item.type == "reasoning"
                      for part in item.summary)
    plain = client.chat.completions.create(model=model, messages=ASK)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=ASK,
                                                           reasoning_effort="minimal")
    seen[model] = {
        "whole": extra(whole.choices[0].message, "reasoning_content"),
        "reasoning_tokens": details.reasoning_tokens if details else None,
        "streamed": thinking,
        "output": kinds,
        "summary": summary,
        "responses_reasoning_tokens": response.usage.output_tokens_details.reasoning_tokens,
        "plain": extra(plain.choices[0].message, "reasoning_content"),
        "minimal_job": raw.headers["x-request-id"],
    }

try:
    client.chat.completions.create(model=MODELS[0], messages=ASK, reasoning_effort="extreme")
    raise AssertionError("an effort that does not exist was accepted")
except openai.BadRequestError as error:
    refused = {"param": error.body.get("param"), "code": error.body.get("code")}

print(json.dumps({"seen": seen, "refused": refused}))
