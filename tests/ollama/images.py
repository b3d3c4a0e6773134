"""The official `ollama` package shows images through Tollgate.

Run by the end-to-end test `images::the_ollama_python_package_shows_images`, which passes
Tollgate's Ollama host and a token in TOLLGATE_OLLAMA_HOST and TOLLGATE_TOKEN, the models to try in
TOLLGATE_MODELS (one routed to Ollama, one to OpenAI) and an image as base64 in
TOLLGATE_IMAGE_BASE64. For each model: the image's bytes in a chat message's `images` (the
package sends them as base64), whole and streamed, and on generate. It prints one JSON line with
what the sims said they saw; any failed check raises.
"""

import base64
import json
import os

import ollama

client = ollama.Client(host=os.environ["TOLLGATE_OLLAMA_HOST"],
                       headers={"Authorization": f"Bearer {os.environ['TOLLGATE_TOKEN']}"})
MODELS = os.environ["TOLLGATE_MODELS"].split(",")
IMAGE = base64.b64decode(os.environ["TOLLGATE_IMAGE_BASE64"])

seen = {}
for model in MODELS:
    ask = [{"role": "user", "content": "What is in this picture?", "images": [IMAGE]}]
    whole = client.chat(model=model, messages=ask, stream=False)
    streamed = "".join(part.message.content for part in client.chat(model=model, messages=ask,
                                                                     stream=True))
    generated = client.generate(model=model, prompt="Describe it.", images=[IMAGE], stream=False)
    seen[model] = {"chat": whole.message.content, "streamed": streamed,
                   "generate": generated.response}

try:
    client.chat(model=MODELS[0], messages=[{"role": "user", "content": "?",
                                            "images": ["bm90IGFuIGltYWdl"]}])
    raise AssertionError("text sent as an image was accepted")
except ollama.ResponseError as error:
    refused = error.error

print(json.dumps({"seen": seen, "refused": refused}))
