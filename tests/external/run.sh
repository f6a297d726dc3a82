#!/usr/bin/env bash
# External MCP clients against the real delegate-host, for CI:
#   1. the Python MCP SDK (pip `mcp`), legacy mode and the 2026-07-28 revision,
#      over stdio and over streamable HTTP;
#   2. the MCP Inspector CLI (@modelcontextprotocol/inspector 2.x, on Node 22),
#      over stdio and over HTTP;
#   3. the server scenarios of @modelcontextprotocol/conformance that apply to
#      any server, over HTTP (through tests/external/auth_proxy.mjs, which adds
#      the bearer token the suite cannot send).
# Everything is installed into $DELEGATE_EXTERNAL_DIR (default
# target/external-clients) with the registries' own clients, pinned.
# Ends with "external: N passed, M failed"; exits non-zero if anything failed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ext="${DELEGATE_EXTERNAL_DIR:-$root/target/external-clients}"
target="${CARGO_TARGET_DIR:-$root/target}"

PY_MCP_VERSION="2.3.0"
INSPECTOR_VERSION="2.12.0"
CONFORMANCE_VERSION="0.1.16"
NODE_VERSION="22"
TOKEN="external-clients-token-0123456789"

passed=0
failed=0
failures=()
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1" >&2; }

log() { echo "== $*" >&2; }

# --- install -----------------------------------------------------------------
mkdir -p "$ext"
if [[ ! -x "$ext/venv/bin/python" ]] || ! "$ext/venv/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$PY_MCP_VERSION')" 2>/dev/null; then
  log "installing the Python MCP SDK $PY_MCP_VERSION"
  python3 -m venv "$ext/venv"
  "$ext/venv/bin/pip" install --quiet --disable-pip-version-check "mcp==$PY_MCP_VERSION"
fi
py="$ext/venv/bin/python"

installed_node_deps() {
  "$py" - "$ext/node/package.json" "$INSPECTOR_VERSION" "$CONFORMANCE_VERSION" "$NODE_VERSION" <<'PY'
import json, sys
path, inspector, conformance, node = sys.argv[1:]
try:
    deps = json.load(open(path)).get("dependencies", {})
except (OSError, ValueError):
    sys.exit(1)
ok = (deps.get("@modelcontextprotocol/inspector") == inspector
      and deps.get("@modelcontextprotocol/conformance") == conformance
      and deps.get("node", "").split(".")[0] == node)
sys.exit(0 if ok else 1)
PY
}
if ! installed_node_deps; then
  log "installing Node $NODE_VERSION, the MCP Inspector $INSPECTOR_VERSION and the conformance suite $CONFORMANCE_VERSION"
  mkdir -p "$ext/node"
  printf '{"name":"delegate-external-clients","private":true}\n' > "$ext/node/package.json"
  (cd "$ext/node" && npm install --no-audit --no-fund --save-exact \
    "node@$NODE_VERSION" \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2)
fi
export PATH="$ext/node/node_modules/.bin:$PATH"
node_version="$(node --version)"
[[ "$node_version" == v$NODE_VERSION.* ]] || { echo "node $node_version is not $NODE_VERSION" >&2; exit 1; }

# --- binaries ----------------------------------------------------------------
if [[ -z "${DELEGATE_HOST_BIN:-}" ]]; then
  log "building delegate-host and delegate-guest"
  (cd "$root" && cargo build -p delegate-host -p delegate-guest >&2)
  DELEGATE_HOST_BIN="$target/debug/delegate-host"
  DELEGATE_GUEST_BIN_PATH="$target/debug/delegate-guest"
else
  DELEGATE_GUEST_BIN_PATH="${DELEGATE_GUEST_BIN:-$(dirname "$DELEGATE_HOST_BIN")/delegate-guest}"
fi
host="$DELEGATE_HOST_BIN"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A fresh data directory and settings for one host.
host_env() {
  local dir="$work/$1"
  mkdir -p "$dir"
  # Drop whatever the caller's shell set, then set ours.
  unset DELEGATE_HTTP_TOKEN DELEGATE_HTTP_TOKEN_FILE DELEGATE_PROVIDER CALLBACK_URL || true
  export DELEGATE_DATA_DIR="$dir/data" CALLBACK_HOST=127.0.0.1 CALLBACK_PORT=0 \
    DELEGATE_GUEST_BIN="$DELEGATE_GUEST_BIN_PATH" RUST_LOG=warn
}

# Starts `serve --http` on a free port; sets $url and $serve_log.
start_http() {
  host_env "$1"
  serve_log="$work/$1/serve.log"
  DELEGATE_HTTP_TOKEN="$TOKEN" "$host" serve --http 127.0.0.1:0 2>"$serve_log" &
  pids+=("$!")
  url=""
  for _ in $(seq 1 300); do
    url="$(grep -o 'http://127\.0\.0\.1:[0-9]*/mcp' "$serve_log" | head -n1 || true)"
    [[ -n "$url" ]] && return 0
    sleep 0.1
  done
  echo "serve --http did not start:" >&2
  cat "$serve_log" >&2
  return 1
}

# --- 1. Python SDK -----------------------------------------------------------
for mode in legacy 2026-07-28; do
  log "Python SDK ($mode) over stdio"
  host_env "py-stdio-$mode"
  if out="$("$py" "$here/python_client.py" --mode "$mode" --stdio "$host" 2>"$work/py-stdio-$mode/stderr")"; then
    pass "python-sdk $mode stdio: $(tail -n1 <<<"$out")"
  else
    echo "$out" >&2; tail -n 40 "$work/py-stdio-$mode/stderr" >&2
    fail "python-sdk $mode stdio"
  fi

  log "Python SDK ($mode) over HTTP"
  start_http "py-http-$mode"
  if out="$("$py" "$here/python_client.py" --mode "$mode" --url "$url" --token "$TOKEN" 2>&1)"; then
    pass "python-sdk $mode http: $(tail -n1 <<<"$out")"
  else
    echo "$out" >&2; tail -n 40 "$serve_log" >&2
    fail "python-sdk $mode http"
  fi
done

# --- 2. MCP Inspector CLI ----------------------------------------------------
# inspector ARGS... -- runs the CLI against the current target ($inspect_target).
# The installed bin is called directly (npx resolves it only from its own
# directory); its `node` is the Node 22 first on PATH.
inspector() {
  mcp-inspector --cli "${inspect_target[@]}" "$@" 2>>"$work/inspector.stderr"
}

# json_check NAME EXPR: EXPR is Python evaluated with `d` = stdin's JSON.
json_check() {
  "$py" -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($2) else 1)"
}

inspector_suite() {
  local tag="$1" out job
  if out="$(inspector --method tools/list)" && json_check tools <<<"$out" \
      "len(d['tools']) == 9 and all('outputSchema' in t for t in d['tools']) and 'uint' not in json.dumps(d)"; then
    pass "inspector $tag: tools/list"
  else
    fail "inspector $tag: tools/list"
  fi
  if out="$(inspector --method resources/templates/list)" && json_check templates <<<"$out" \
      "any('{job_id}' in t['uriTemplate'] for t in d['resourceTemplates'])"; then
    pass "inspector $tag: resources/templates/list"
  else
    fail "inspector $tag: resources/templates/list"
  fi
  out="$(inspector --method tools/call --tool-name submit_job \
    --tool-arg 'manifest={"task":"echo from-inspector","agentType":"script","timeout":60}' || true)"
  job="$("$py" -c "import json,sys; print(json.load(sys.stdin)['structuredContent']['job_id'])" <<<"$out" 2>/dev/null || true)"
  if [[ -n "$job" ]]; then
    pass "inspector $tag: submit_job"
  else
    echo "$out" >&2
    fail "inspector $tag: submit_job"
    return
  fi
  local finished=""
  for _ in 1 2 3 4 5 6; do
    out="$(inspector --method tools/call --tool-name wait_for_job --tool-arg "job_id=$job" --tool-arg timeout_seconds=20 || true)"
    if json_check wait <<<"$out" "d['structuredContent']['finished']"; then finished=1; break; fi
  done
  if [[ -n "$finished" ]] && json_check wait <<<"$out" "d['structuredContent']['status'] == 'success'"; then
    pass "inspector $tag: wait_for_job"
  else
    echo "$out" >&2
    fail "inspector $tag: wait_for_job"
  fi
  out="$(inspector --method tools/call --tool-name get_job_result --tool-arg "job_id=$job" || true)"
  if json_check result <<<"$out" "'from-inspector' in d['structuredContent']['output']['stdout']['text']"; then
    pass "inspector $tag: get_job_result"
  else
    echo "$out" >&2
    fail "inspector $tag: get_job_result"
  fi
  out="$(inspector --method tools/call --tool-name list_jobs --tool-arg status=bogus || true)"
  if json_check list <<<"$out" "d.get('isError') is True"; then
    pass "inspector $tag: list_jobs refuses an unknown status"
  else
    echo "$out" >&2
    fail "inspector $tag: list_jobs refuses an unknown status"
  fi
}

log "MCP Inspector CLI over stdio"
host_env inspector-stdio
# Each CLI call starts its own `serve`; the job lives on in the data
# directory, and a guest started by one server reports to the next, so the
# callback port must stay the same (as CALLBACK_PORT's default does).
callback_port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
inspect_target=(-e "DELEGATE_DATA_DIR=$DELEGATE_DATA_DIR" -e CALLBACK_HOST=127.0.0.1 -e "CALLBACK_PORT=$callback_port"
  -e "DELEGATE_GUEST_BIN=$DELEGATE_GUEST_BIN" -e RUST_LOG=warn "$host" serve)
inspector_suite stdio

log "MCP Inspector CLI over HTTP"
start_http inspector-http
inspect_target=("$url" --transport http --header "Authorization: Bearer $TOKEN")
inspector_suite http

# --- 3. conformance server scenarios -----------------------------------------
log "MCP conformance suite (server scenarios that apply to any server)"
start_http conformance
node "$here/auth_proxy.mjs" "$url" "$TOKEN" >"$work/proxy.out" &
pids+=("$!")
proxy_port=""
for _ in $(seq 1 100); do
  proxy_port="$(awk '/^listening/ {print $2}' "$work/proxy.out" 2>/dev/null || true)"
  [[ -n "$proxy_port" ]] && break
  sleep 0.1
done
[[ -n "$proxy_port" ]] || { echo "auth proxy did not start" >&2; exit 1; }
for scenario in server-initialize ping tools-list resources-list resources-subscribe \
    resources-unsubscribe server-sse-multiple-streams server-sse-polling dns-rebinding-protection; do
  if out="$(conformance server --url "http://localhost:$proxy_port/mcp" --scenario "$scenario" 2>&1)" \
      && grep -q ", 0 failed" <<<"$out"; then
    pass "conformance $scenario: $(grep -o 'Passed: [0-9/]*' <<<"$out" | tail -n1)"
  else
    echo "$out" | tail -n 30 >&2
    fail "conformance $scenario"
  fi
done

echo
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}" >&2
  if [[ -s "$work/inspector.stderr" ]]; then
    echo "--- inspector stderr (last lines)" >&2
    tail -n 30 "$work/inspector.stderr" >&2
  fi
fi
echo "external: $passed passed, $failed failed"
((failed == 0))
