"""The official `openai` package keeps using its pooled connections through refusals.

Run by the end-to-end test `hardening::the_openai_package_loses_no_request_after_refusals`, which
passes Tollgate's address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN. Two clients
share one connection pool (the package's own `httpx` client) and do not retry, as an SDK user's
would not on a broken connection: requests Tollgate refuses (an unknown batch, an upload that is
not a batch file, a 200 KB upload with a bad key, refused before its body is read) each followed by
a good request. It prints
one JSON line counting what it saw; a request lost to a closed connection is counted, not raised.
"""

import json
import os

import openai

base_url = os.environ["TOLLGATE_OPENAI_BASE_URL"]
client = openai.OpenAI(base_url=base_url, api_key=os.environ["TOLLGATE_TOKEN"], max_retries=0)
stranger = openai.OpenAI(
    base_url=base_url, api_key="tg_not-a-token", max_retries=0, http_client=client._client
)

refused = lost = answered = 0
for i in range(300):
    try:
        if i % 3 == 0:
            client.batches.retrieve("batch_" + "0" * 32)
        elif i % 3 == 1:
            client.files.create(file=("x.jsonl", b"not a request line\n"), purpose="batch")
        else:
            # Refused for its key before its 200 KB body is read.
            stranger.files.create(file=("big.jsonl", b"x" * 200_000), purpose="batch")
    except openai.APIConnectionError:
        lost += 1
    except openai.APIStatusError:
        refused += 1
    try:
        client.files.list()
        answered += 1
    except openai.APIConnectionError:
        lost += 1
print(json.dumps({"refused": refused, "answered": answered, "lost": lost}))
