"""The official `openai` package runs batches through Tollgate's OpenAI Batch API.

Run by the end-to-end test `openai_batches::the_openai_python_package_runs_batches`, which starts
Tollgate and passes its address and a token in TOLLGATE_OPENAI_BASE_URL and TOLLGATE_TOKEN. For
each endpoint it uploads a JSONL file, makes a batch of it, polls it to the end and reads the output
file, checking every object against the package's own (strict) models. It prints one JSON line
summing up what it saw; any failed check raises and exits non-zero.
"""

import json
import os
import sys
import time

import openai
from openai.types import Batch, CreateEmbeddingResponse, FileObject
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

MODEL = os.environ.get("TOLLGATE_MODEL", "llama3")
client = openai.OpenAI(
    base_url=os.environ["TOLLGATE_OPENAI_BASE_URL"],
    api_key=os.environ["TOLLGATE_TOKEN"],
    max_retries=0,
    timeout=30,
)


def jsonl(endpoint, bodies):
    lines = [
        json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": endpoint, "body": body})
        for i, body in enumerate(bodies)
    ]
    return ("\n".join(lines) + "\n").encode()


def upload(data):
    uploaded = client.files.create(file=("input.jsonl", data), purpose="batch")
    FileObject.model_validate(uploaded.to_dict())
    assert uploaded.purpose == "batch", uploaded
    assert uploaded.bytes == len(data), (uploaded.bytes, len(data))
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content == data
    return uploaded


def run(endpoint, bodies, parse):
    """One batch from upload to output; the parsed response bodies by custom_id."""
    uploaded = upload(jsonl(endpoint, bodies))
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,
        completion_window="24h",
        metadata={"suite": "python"},
    )
    assert batch.status in ("validating", "in_progress", "finalizing", "completed"), batch
    deadline = time.monotonic() + 90
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch {batch.id} still {batch.status}"
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    Batch.model_validate(batch.to_dict())
    assert batch.status == "completed", batch
    assert batch.endpoint == endpoint and batch.input_file_id == uploaded.id, batch
    assert batch.metadata == {"suite": "python"}, batch.metadata
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(bodies), len(bodies), 0), counts
    assert batch.output_file_id and batch.error_file_id is None, batch
    assert batch.completed_at is not None and batch.usage.input_tokens > 0, batch

    output = client.files.retrieve(batch.output_file_id)
    FileObject.model_validate(output.to_dict())
    assert output.purpose == "batch_output", output
    text = client.files.content(batch.output_file_id).text
    assert output.bytes == len(text.encode()), (output.bytes, len(text.encode()))
    lines = [json.loads(line) for line in text.splitlines()]
    by_id = {}
    for line in lines:
        assert line["error"] is None, line
        assert line["response"]["status_code"] == 200, line
        by_id[line["custom_id"]] = parse(line["response"]["body"])
    assert sorted(by_id) == sorted(f"req-{i}" for i in range(len(bodies))), sorted(by_id)
    return batch, by_id


def main():
    chat_batch, chats = run(
        "/v1/chat/completions",
        [
            {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": "Write product copy."},
                    {"role": "user", "content": f"Describe product {i}."},
                ],
                "max_tokens": 20,
            }
            for i in range(5)
        ],
        ChatCompletion.model_validate,
    )
    for completion in chats.values():
        assert completion.choices[0].message.content, completion
        assert completion.usage.completion_tokens > 0, completion

    responses_batch, responses = run(
        "/v1/responses",
        [{"model": MODEL, "instructions": "Be brief.", "input": f"Topic {i}"} for i in range(3)],
        Response.model_validate,
    )
    for response in responses.values():
        assert response.output_text, response

    embeddings_batch, embeddings = run(
        "/v1/embeddings",
        [{"model": MODEL, "input": [f"text {i}", "more"]} for i in range(3)],
        CreateEmbeddingResponse.model_validate,
    )
    for embedding in embeddings.values():
        assert len(embedding.data) == 2 and embedding.data[1].embedding, embedding

    # The listing pages with `after`, one batch a page, newest first.
    listed = [batch.id for batch in client.batches.list(limit=1)]
    made = [embeddings_batch.id, responses_batch.id, chat_batch.id]
    assert listed[:3] == made, (listed, made)

    # Uploads are listed newest first, page by page, and an input file may be deleted once its
    # batch is made: the batch still names it and its output stays readable.
    uploads = [f.id for f in client.files.list(purpose="batch", limit=2)]
    assert uploads[:3] == [embeddings_batch.input_file_id, responses_batch.input_file_id,
                           chat_batch.input_file_id], uploads
    deleted = client.files.delete(chat_batch.input_file_id)
    assert deleted.deleted and deleted.id == chat_batch.input_file_id, deleted
    try:
        client.files.retrieve(chat_batch.input_file_id)
        raise AssertionError("a deleted file was found")
    except openai.NotFoundError:
        pass
    kept = client.batches.retrieve(chat_batch.id)
    assert kept.input_file_id == chat_batch.input_file_id, kept
    assert client.files.content(kept.output_file_id).text.count("\n") == len(chats)

    # A bad line is refused when the batch is made, naming the line.
    bad = upload(
        jsonl(
            "/v1/chat/completions",
            [
                {"model": MODEL, "messages": [{"role": "user", "content": "fine"}]},
                {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 9},
            ],
        )
    )
    try:
        client.batches.create(
            input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        raise AssertionError("a batch with a bad line was accepted")
    except openai.BadRequestError as error:
        assert "line 2" in error.message and "body.n" in error.message, error.message
        assert error.body["param"] == "input_file_id", error.body

    # A wrong key is an authentication error, as at OpenAI.
    stranger = client.with_options(api_key="tg_not-a-token")
    try:
        stranger.batches.retrieve(chat_batch.id)
        raise AssertionError("a wrong key was let in")
    except openai.AuthenticationError:
        pass
    try:
        client.batches.retrieve("batch_" + "0" * 32)
        raise AssertionError("an unknown batch was found")
    except openai.NotFoundError:
        pass

    print(
        json.dumps(
            {
                "openai": openai.__version__,
                "chat": len(chats),
                "responses": len(responses),
                "embeddings": len(embeddings),
                "listed": len(listed),
                "uploads": len(uploads),
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"check failed: {failure!r}", file=sys.stderr)
        raise
