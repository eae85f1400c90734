"""The official `openai` client calling through the gateway.

Usage: openai_client.py BASE_URL CASES_JSON
CASES_JSON is a list of {"name", "token", "base"} (base: a path under
BASE_URL). For each case it calls chat.completions.create and prints one
JSON line: the status, and for an error the exception class, its code,
type and message as the SDK shows them to its user.
"""

import json
import sys

import openai


def call(base_url: str, case: dict) -> dict:
    client = openai.OpenAI(
        api_key=case["token"], base_url=base_url + case["base"], max_retries=0
    )
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        return {"name": case["name"], "status": raw.status_code}
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
