"""The official `openai` client calling through the gateway.

Usage: openai_client.py BASE_URL CASES_JSON
CASES_JSON is a list of {"name", "token", "base"} (base: a path under
BASE_URL), each optionally with "model" (default gpt-4o-mini), "stream"
(bool), "include_usage" (bool) and "max_tokens". For each case it calls
chat.completions.create and prints one JSON line: the status; for a stream,
how many chunks it iterated, how many had no choices (what a client that
reads choices[0] fails on) and the usage it saw; for an error the
exception class, its code, type and message as the SDK shows them to its
user.
"""

import json
import sys

import openai


def call(base_url: str, case: dict) -> dict:
    client = openai.OpenAI(
        api_key=case["token"], base_url=base_url + case["base"], max_retries=0
    )
    args = {
        "model": case.get("model", "gpt-4o-mini"),
        "messages": [{"role": "user", "content": "hi"}],
    }
    if "max_tokens" in case:
        args["max_tokens"] = case["max_tokens"]
    if case.get("stream"):
        args["stream"] = True
        if "include_usage" in case:
            args["stream_options"] = {"include_usage": case["include_usage"]}
    try:
        if not case.get("stream"):
            raw = client.chat.completions.with_raw_response.create(**args)
            usage = raw.parse().usage
            return {
                "name": case["name"],
                "status": raw.status_code,
                "usage": usage.model_dump() if usage else None,
            }
        chunks, empty, usage, text = 0, 0, None, ""
        for chunk in client.chat.completions.create(**args):
            chunks += 1
            if not chunk.choices:
                empty += 1
            else:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage.model_dump()
        return {
            "name": case["name"],
            "status": 200,
            "chunks": chunks,
            "empty_choices": empty,
            "usage": usage,
            "text": text,
        }
    except openai.APIStatusError as e:
        return {
            "name": case["name"],
            "status": e.status_code,
            "class": type(e).__name__,
            "code": e.code,
            "type": e.type,
            "message": str(e),
        }


def main() -> None:
    base_url, cases = sys.argv[1], json.loads(sys.argv[2])
    for case in cases:
        print(json.dumps(call(base_url, case)), flush=True)


if __name__ == "__main__":
    main()
