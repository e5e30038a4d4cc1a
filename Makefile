# lemming: build, demo, test, bench, lint.
CARGO ?= cargo
# cargo builds into $CARGO_TARGET_DIR when it is set, else into target/.
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/lemming
ifndef DEMO_DIR
DEMO_DIR := $(shell mktemp -d -u /tmp/lemming-demo.XXXXXX)
endif

.PHONY: build demo demo-local demo-cluster test bench lint fmt clean

build:
	$(CARGO) build --release --bin lemming

## demo: a fresh org on the mock provider; no API key needed.
demo: build
	@echo "== lemming init $(DEMO_DIR)"
	@$(BIN) init $(DEMO_DIR)
	@echo "== lemming send manager \"Please plan the launch @planner\""
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) send manager "Please plan the launch @planner"
	@echo "== lemming send manager: a /tool line makes the mock agent call that tool"
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) send manager '/tool write_file {"path":"launch.md","content":"# Launch plan\n1. pick a date\n"}'
	@echo "== lemming send manager: @hr gets the message too; hr may hire, the manager may not"
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) send manager "$$(printf '%s\n%s' '@hr we need a tester' '/tool hire_agent {"name":"tester","title":"Tester","instructions":"Test what the coders build.","send_to":["hr"],"read_from":["hr"],"credits":5}')"
	@echo "== lemming step -n 3"
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) step -n 3
	@echo "== lemming inbox   (replies, and the manager telling how its tool calls went)"
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) inbox
	@echo "== lemming logs manager -n 3   (each tool call, its outcome and duration)"
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) logs manager -n 3
	@echo "== cat agents/manager/workspace/launch.md   (written by the manager's write_file)"
	@cat $(DEMO_DIR)/agents/manager/workspace/launch.md
	@echo "== lemming agents   (tester was hired by hr)"
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) agents
	@echo "== lemming status"
	@LEMMING_ORG=$(DEMO_DIR) $(BIN) status
	@echo "== the org is in $(DEMO_DIR); try: LEMMING_ORG=$(DEMO_DIR) $(BIN) inspect planner"

## demo-local: the default org on a real local model (llama.cpp's server with
## Gemma 3 270M, built once by scripts/setup-llm-peers.sh); no key, no internet.
## lemming starts llama-server itself on the first model call (`serve = {...}`
## in org/models.toml) and stops it when the command ends.
demo-local: build
	@BIN=$(BIN) DEMO_DIR=$(DEMO_DIR) bash scripts/demo-local.sh

## demo-cluster: one org on two nodes (two folders, two daemons) that exchange
## mail through a local nats-server with JetStream (installed once by
## scripts/setup-llm-peers.sh --only nats); the mock provider, no key.
demo-cluster: build
	@BIN=$(BIN) DEMO_DIR=$(DEMO_DIR) bash scripts/demo-cluster.sh

## test: every test of the workspace (unit, end-to-end on the real binary).
test:
	$(CARGO) test --workspace --all-targets

## bench: the benchmarks behind BENCHMARKS.md (release build).
bench:
	$(CARGO) build --release -p lemming-cli -p lemming-bench
	$(TARGET_DIR)/release/lemming-bench

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
