"""Drive delegate-host with the official Python MCP SDK (mcp 2.x).

Runs one job end to end through the tools, in the protocol mode given:
`legacy` (the initialize handshake) or a modern revision such as
`2026-07-28` (per-request metadata, no handshake). The server is either a
`delegate-host serve` child over stdio, or a running `serve --http` server.

Prints one line per check and a closing `N passed, M failed` line; exits
non-zero when a check failed.

    python_client.py --mode legacy --stdio /path/to/delegate-host
    python_client.py --mode 2026-07-28 --url http://127.0.0.1:PORT/mcp --token T
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: Any = "") -> bool:
    RESULTS.append((name, ok, str(detail)))
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + ("" if ok else f": {detail}"), flush=True)
    return ok


def structured(result: Any) -> dict[str, Any]:
    """The structured content, checked against the text copy."""
    data = result.structured_content
    texts = [c.text for c in result.content if getattr(c, "type", "") == "text"]
    if texts:
        check("text content carries the structured JSON", json.loads(texts[0]) == data, texts[0][:200])
    return data or {}


MANIFEST = {
    "task": "for i in 1 2 3 4 5; do echo \"py line $i\"; done\nmkdir -p out\nprintf 'from python' > out/py.txt",
    "agentType": "script",
    "statusMode": "streaming",
    "timeout": 120,
    "artifacts": ["out/*"],
}


async def exercise(client: Client) -> None:
    tools = await client.list_tools()
    names = sorted(t.name for t in tools.tools)
    check(
        "tools/list names the nine tools",
        names
        == ["cancel_job", "continue_job", "get_job_logs", "get_job_result", "get_job_status", "list_jobs", "release_job", "submit_job", "wait_for_job"],
        names,
    )
    check("every tool has an output schema", all(t.output_schema for t in tools.tools))
    schemas = json.dumps([t.model_dump(mode="json", by_alias=True) for t in tools.tools])
    check("no uint/int formats in schemas", '"format": "uint' not in schemas and '"format": "int' not in schemas)

    bad = await client.call_tool("submit_job", {"manifest": {"task": "x", "agentType": "robot"}})
    check("an invalid manifest is a tool error naming the field", bad.is_error and "agentType" in bad.content[0].text)

    submitted = structured(await client.call_tool("submit_job", {"manifest": MANIFEST}))
    job_id = submitted.get("job_id")
    check("submit_job answers a job_id", isinstance(job_id, str), submitted)

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    status: dict[str, Any] = {}
    for _ in range(20):
        status = structured(
            await client.call_tool(
                "wait_for_job", {"job_id": job_id, "timeout_seconds": 10}, progress_callback=on_progress
            )
        )
        if status.get("finished"):
            break
    check("the job succeeds", status.get("status") == "success", status)
    check("wait_for_job sent progress", len(progress) > 0, progress)

    result = structured(await client.call_tool("get_job_result", {"job_id": job_id}))
    check("stdout is in the result", "py line 5" in result.get("output", {}).get("stdout", {}).get("text", ""), result)
    artifacts = result.get("artifacts", [])
    check("one artifact", len(artifacts) == 1, artifacts)
    if artifacts:
        read = await client.read_resource(artifacts[0]["uri"])
        text = getattr(read.contents[0], "text", None)
        check("the artifact reads as a resource", text == "from python", read)

    collected = ""
    cursor = 0
    for _ in range(1000):
        part = structured(
            await client.call_tool(
                "get_job_logs", {"job_id": job_id, "stream": "stdout", "cursor": cursor, "max_bytes": 9}
            )
        )
        collected += part["data"]
        cursor = part["next_cursor"]
        if part["complete"]:
            break
    check("logs read by cursor add up", collected == "".join(f"py line {i}\n" for i in range(1, 6)), collected)

    listed = structured(await client.call_tool("list_jobs", {"status": "success"}))
    check("list_jobs filters by status", any(j["job_id"] == job_id for j in listed.get("jobs", [])), listed)
    unknown = await client.call_tool("list_jobs", {"status": "finished"})
    check("an unknown status is an error", bool(unknown.is_error))


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True, help="legacy, auto, or a modern revision (2026-07-28)")
    parser.add_argument("--stdio", help="path of delegate-host, served as a child over stdio")
    parser.add_argument("--url", help="MCP endpoint of a running serve --http")
    parser.add_argument("--token", default=os.environ.get("DELEGATE_HTTP_TOKEN"))
    args = parser.parse_args()

    if args.stdio:
        server: Any = StdioServerParameters(command=args.stdio, args=["serve"], env=dict(os.environ))
        async with Client(server, mode=args.mode) as client:
            check(f"connected over stdio ({client.protocol_version})", True)
            await exercise(client)
    else:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {args.token}"}, timeout=60)
        async with http, Client(streamable_http_client(args.url, http_client=http), mode=args.mode) as client:
            check(f"connected over HTTP ({client.protocol_version})", True)
            await exercise(client)

    passed = sum(1 for _, ok, _ in RESULTS if ok)
    failed = len(RESULTS) - passed
    print(f"python-sdk {args.mode}: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
