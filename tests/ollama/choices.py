"""The official `ollama` package asks for log probabilities through Tollgate.

Run by the end-to-end test `choices::the_ollama_python_package_gets_log_probabilities`, which
passes Tollgate's Ollama host and a token in TOLLGATE_OLLAMA_HOST and TOLLGATE_TOKEN and the
models in TOLLGATE_MODELS (one routed to Ollama, one to OpenAI). For each: `logprobs` with
`top_logprobs` on chat whole and streamed and on generate. It prints one JSON line with what it
saw; any failed check raises.
"""

import json
import os

import ollama

client = ollama.Client(host=os.environ["TOLLGATE_OLLAMA_HOST"],
                       headers={"Authorization": f"Bearer {os.environ['TOLLGATE_TOKEN']}"})
MODELS = os.environ["TOLLGATE_MODELS"].split(",")
ASK = [{"role": "user", "content": "Name a colour for a bicycle."}]

seen = {}
for model in MODELS:
    whole = client.chat(model=model, messages=ASK, logprobs=True, top_logprobs=3, stream=False)
    tokens, text = [], ""
    for part in client.chat(model=model, messages=ASK, logprobs=True, top_logprobs=3,
                            stream=True):
        text += part.message.content or ""
        tokens += part.logprobs or []
    generated = client.generate(model=model, prompt="Name a colour.", logprobs=True,
                                top_logprobs=1, stream=False)
    seen[model] = {
        "text": whole.message.content,
        "tokens": "".join(t.token for t in whole.logprobs or []),
        "alternatives": sorted({len(t.top_logprobs or []) for t in whole.logprobs or []}),
        "streamed_text": text,
        "streamed_tokens": "".join(t.token for t in tokens),
        "generated": generated.response,
        "generated_tokens": "".join(t.token for t in generated.logprobs or []),
    }

print(json.dumps({"seen": seen}))
