"""The official `ollama` package asks for thinking through Tollgate.

Run by the end-to-end test `reasoning::the_ollama_python_package_thinks`, which passes Tollgate's
Ollama host and a token in TOLLGATE_OLLAMA_HOST and TOLLGATE_TOKEN and, in TOLLGATE_MODELS, a
thinking model on Ollama and a model that cannot think. For each: `think=True` on chat whole,
`think="high"` streamed, `think=True` on generate, nothing asked; then a turn whose history sends
the thinking back. It prints one JSON line with what it saw; any failed check raises.
"""

import json
import os

import ollama

client = ollama.Client(host=os.environ["TOLLGATE_OLLAMA_HOST"],
                       headers={"Authorization": f"Bearer {os.environ['TOLLGATE_TOKEN']}"})
MODELS = os.environ["TOLLGATE_MODELS"].split(",")
ASK = [{"role": "user", "content": "Why is the sky blue on a clear day?"}]

seen = {}
for model in MODELS:
    whole = client.chat(model=model, messages=ASK, think=True, stream=False)
    thinking, text = "", ""
    for part in client.chat(model=model, messages=ASK, think="high", stream=True):
        thinking += part.message.thinking or ""
        text += part.message.content or ""
    assert text, model
    generated = client.generate(model=model, prompt="Why is grass green?", think=True,
                                stream=False)
    plain = client.chat(model=model, messages=ASK, stream=False)
    history = ASK + [{"role": "assistant", "content": whole.message.content,
                      "thinking": whole.message.thinking},
                     {"role": "user", "content": "And at sunset?"}]
    again = client.chat(model=model, messages=history, think=True, stream=False)
    seen[model] = {
        "whole": whole.message.thinking,
        "whole_tokens": whole.eval_count,
        "streamed": thinking,
        "generated": generated.thinking,
        "plain": plain.message.thinking,
        "plain_tokens": plain.eval_count,
        "again": again.message.content,
    }

print(json.dumps({"seen": seen}))
