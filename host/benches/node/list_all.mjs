// The full listing as the original report measured it: the official Node
// MCP client (@modelcontextprotocol/sdk) over stdio, every job with
// `list_jobs` in pages of `limit`. Started by benches/load.rs with the
// SDK's directory, the server's argv after `--`, and the server's
// environment as its own. Prints one JSON line of figures.
//
//   node list_all.mjs SDK_DIR LIMIT RUNS -- delegate-host serve
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [sdk, limitArg, runsArg, dashes, command, ...args] = process.argv.slice(2);
if (dashes !== "--" || !command) {
  console.error("usage: list_all.mjs SDK_DIR LIMIT RUNS -- COMMAND [ARGS...]");
  process.exit(2);
}
const load = (path) => import(pathToFileURL(join(sdk, "dist/esm", path)).href);
const { Client } = await load("client/index.js");
const { StdioClientTransport } = await load("client/stdio.js");

const transport = new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
const client = new Client({ name: "delegate-load-bench", version: "1" });
await client.connect(transport);

async function listAll() {
  let seen = 0;
  let cursor;
  do {
    const args = { limit: Number(limitArg) };
    if (cursor) args.cursor = cursor;
    const r = await client.callTool({ name: "list_jobs", arguments: args });
    if (r.isError) throw new Error(`list_jobs: ${JSON.stringify(r.content)}`);
    seen += r.structuredContent.jobs.length;
    cursor = r.structuredContent.next_cursor;
  } while (cursor);
  return seen;
}

const jobs = await listAll(); // warm
const ms = [];
for (let i = 0; i < Number(runsArg); i++) {
  const start = performance.now();
  await listAll();
  ms.push(performance.now() - start);
}
ms.sort((a, b) => a - b);
console.log(JSON.stringify({ jobs, p50_ms: ms[ms.length >> 1], min_ms: ms[0], node: process.version }));
await client.close();
