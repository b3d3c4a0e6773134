"""The official `openai` package asks for several choices and log probabilities through Tollgate.

Run by the end-to-end test `choices::the_openai_python_package_gets_choices_and_log_probabilities`,
which passes Tollgate's address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN and the
models in TOLLGATE_MODELS (one routed to Ollama, one to OpenAI). For each: one choice and `n=2`
(their usage compared), `logprobs` with `top_logprobs` whole and streamed; then the refusals, each
naming its parameter. It prints one JSON line with what it saw; any failed check raises.
"""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["TOLLGATE_OPENAI_BASE_URL"],
                       api_key=os.environ["TOLLGATE_TOKEN"], max_retries=0, timeout=60)
MODELS = os.environ["TOLLGATE_MODELS"].split(",")
ASK = [{"role": "user", "content": "Name a colour for a bicycle."}]

seen = {}
for model in MODELS:
    one = client.chat.completions.create(model=model, messages=ASK)
    two = client.chat.completions.create(model=model, messages=ASK, n=2)
    assert [c.index for c in two.choices] == [0, 1], two
    probed = client.chat.completions.create(model=model, messages=ASK, logprobs=True,
                                            top_logprobs=2)
    tokens = probed.choices[0].logprobs.content
    streamed_tokens, streamed_text = [], ""
    for chunk in client.chat.completions.create(model=model, messages=ASK, logprobs=True,
                                                top_logprobs=2, stream=True):
        if chunk.choices:
            streamed_text += chunk.choices[0].delta.content or ""
            if chunk.choices[0].logprobs and chunk.choices[0].logprobs.content:
                streamed_tokens += chunk.choices[0].logprobs.content
    seen[model] = {
        "one_prompt_tokens": one.usage.prompt_tokens,
        "two_prompt_tokens": two.usage.prompt_tokens,
        "choices": [c.message.content for c in two.choices],
        "text": probed.choices[0].message.content,
        "tokens": "".join(t.token for t in tokens),
        "alternatives": sorted({len(t.top_logprobs) for t in tokens}),
        "all_negative": all(t.logprob <= 0 for t in tokens),
        "streamed_text": streamed_text,
        "streamed_tokens": "".join(t.token for t in streamed_tokens),
        "plain_logprobs": one.choices[0].logprobs is None,
    }

refusals = {}
for name, extra in [("n_streamed", {"n": 2, "stream": True}), ("n_too_many", {"n": 9}),
                    ("top_alone", {"top_logprobs": 2}),
                    ("top_too_many", {"logprobs": True, "top_logprobs": 21})]:
    try:
        client.chat.completions.create(model=MODELS[0], messages=ASK, **extra)
        raise AssertionError(f"{name} was accepted")
    except openai.BadRequestError as error:
        refusals[name] = error.body.get("param")

print(json.dumps({"seen": seen, "refusals": refusals}))
