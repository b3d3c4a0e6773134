"""The official `openai` package shows images through Tollgate.

Run by the end-to-end test `images::the_openai_python_package_shows_images`, which passes
Tollgate's address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN, the models to try in
TOLLGATE_MODELS (one routed to Ollama, one to OpenAI), an image as base64 in TOLLGATE_IMAGE_BASE64
and the URL of the same image on a test server in TOLLGATE_IMAGE_URL. For each model: an image as
a data URL and as an http(s) URL (with `detail`) on Chat Completions, whole and streamed, and as an
`input_image` on the Responses API; then the refusals, each naming the part. The sims answer with
what they were shown (type, size, the start of the SHA-256), which the test compares with what it
sent. It prints one JSON line with what it saw; any failed check raises.
"""

import json
import os

import openai

client = openai.OpenAI(base_url=os.environ["TOLLGATE_OPENAI_BASE_URL"],
                       api_key=os.environ["TOLLGATE_TOKEN"], max_retries=0, timeout=60)
MODELS = os.environ["TOLLGATE_MODELS"].split(",")
DATA_URL = "data:image/png;base64," + os.environ["TOLLGATE_IMAGE_BASE64"]
WEB_URL = os.environ["TOLLGATE_IMAGE_URL"]


def asking(url, detail=None):
    image = {"url": url}
    if detail:
        image["detail"] = detail
    return [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": image}]}]


seen = {}
for model in MODELS:
    inline = client.chat.completions.create(model=model, messages=asking(DATA_URL))
    fetched = client.chat.completions.create(model=model, messages=asking(WEB_URL, "low"))
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(model=model, messages=asking(DATA_URL),
                                                    stream=True)
        if chunk.choices)
    response = client.responses.create(model=model, input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Describe it."},
        {"type": "input_image", "image_url": WEB_URL, "detail": "auto"}]}])
    seen[model] = {
        "inline": inline.choices[0].message.content,
        "fetched": fetched.choices[0].message.content,
        "streamed": streamed,
        "responses": response.output_text,
    }

refusals = {}
for name, url in [("not_an_image", "data:image/png;base64,aGVsbG8="),
                  ("missing", WEB_URL.rsplit("/", 1)[0] + "/missing.png"),
                  ("not_a_url", "pixel.png")]:
    try:
        client.chat.completions.create(model=MODELS[0], messages=asking(url))
        raise AssertionError(f"{name} was accepted")
    except openai.BadRequestError as error:
        refusals[name] = {"param": error.body.get("param"), "code": error.body.get("code")}

print(json.dumps({"seen": seen, "refusals": refusals}))
