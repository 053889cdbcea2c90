# wick: `make run` starts the main job, `make test` runs every test.
# Both install what they need on a fresh Debian machine (see scripts/install-deps.sh).

GO ?= go
BIN := bin
PROTOC_GEN_GO_VERSION := v1.36.12
FUZZTIME ?= 30s
export CGO_ENABLED := 1

.PHONY: all run test deps build vet unit race crossbuild wasm dawn train-test proto testdata fuzz clean

# The engine module browsers run, and the converter module the page loads
# only to import a model from disk; wasm/host's tests check that these exact
# files are what these flags build (keep them identical to wasmFile.build in
# wasm/host/host_test.go). Their .br and .gz siblings (server/precompress)
# spare every server start seconds of compressing them.
WASM := web/wick.wasm
CONVERT_WASM := web/convert.wasm

all: build

deps: node/node_modules/.package-lock.json
	scripts/install-deps.sh

# The Node host's packages (dawn.node, naga-wasm), exactly as the lockfile
# pins them. Their only install script removes a macOS quarantine flag.
node/node_modules/.package-lock.json: node/package-lock.json node/package.json
	@command -v npm >/dev/null || scripts/install-deps.sh nodejs npm
	cd node && npm ci --ignore-scripts --no-audit --no-fund

build: deps wasm
	$(GO) build -o $(BIN)/wick ./cmd/wick

wasm:
	CGO_ENABLED=0 GOOS=wasip1 GOARCH=wasm $(GO) build -trimpath -buildmode=c-shared -o $(WASM) ./wasm/module
	CGO_ENABLED=0 GOOS=wasip1 GOARCH=wasm $(GO) build -trimpath -buildmode=c-shared -o $(CONVERT_WASM) ./wasm/convert
	$(GO) run ./server/precompress $(WASM) $(CONVERT_WASM)

# The main job: the chat page served with the bundled default model
# (models/wick-cai-21m, trained by train/); open the printed URL.
ADDR ?= 127.0.0.1:8080
run: build
	$(BIN)/wick serve -model models/wick-cai-21m -addr $(ADDR)

test: deps vet crossbuild wasm unit race train-test

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./wasm/module ./wasm/convert

# From a fresh clone on a 2-core machine (lavapipe compiles every variant
# cold) shaders ran 1,565 s and engine/webgpu 1,400-1,427 s (2026-12-03),
# and shaders passed 28 minutes while other tests shared the machine: the
# timeout is a guard against hangs, with room above that; a hang still
# ends well within CI's 90 min.
unit:
	$(GO) test -count=1 -timeout 40m ./...

# The race detector on the concurrent parts: the server (API queue, shard
# hashing), the prefix cache, and the engine's tests of sessions sharing a
# model (-short keeps the engine's part to a minute or so on 2 cores).
race:
	$(GO) test -race -count=1 -timeout 15m ./server ./engine/prefix
	$(GO) test -race -short -count=1 -timeout 10m -run 'Concurrent|PrefixCache|Cancel' ./engine

# The CPU backend and everything a browser needs must build without cgo for
# js and wasip1.
crossbuild:
	CGO_ENABLED=0 GOOS=js GOARCH=wasm $(GO) build ./engine/...
	CGO_ENABLED=0 GOOS=wasip1 GOARCH=wasm $(GO) build ./engine/...

# The trainer's tests on the CPU with Debian's python3-torch (installed where
# missing): Python unit tests, then a tiny model trained for 3 steps, exported
# through train/export and checked against wick (internal/trainparity).
train-test:
	GO=$(GO) sh train/test.sh

# The Node host: the page's runtime (web/driver.js, web/wick.wasm) on Dawn,
# Chrome's WebGPU, e.g. make dawn ARGS='gen -model models/wick-cai-21m -prompt Hello'
# or ARGS='bench -model DIR -profile' (see node/host.mjs).
ARGS ?= info
dawn: deps wasm
	node node/host.mjs $(ARGS)

# Regenerates engine/format/manifestpb/manifest.pb.go with Debian's protoc
# and the pinned protoc-gen-go.
proto:
	scripts/install-deps.sh protobuf-compiler
	GOBIN=$(CURDIR)/$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	cd engine/format/manifestpb && protoc --plugin=$(CURDIR)/$(BIN)/protoc-gen-go --go_out=. --go_opt=paths=source_relative manifest.proto

# Regenerates the tiny random test models in testdata/ (seeded: the same
# bytes every time).
testdata:
	$(GO) run ./internal/testmodel/gen -out testdata

# Bounded fuzzing runs of every fuzz target, FUZZTIME each (make test runs
# their seeds): the manifest decoder, the character card reader, the KV
# snapshot file, the safetensors header reader, and the OpenAI request
# decoder with prompt assembly.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeManifest$$' -fuzztime $(FUZZTIME) ./engine/format/
	$(GO) test -run '^$$' -fuzz '^FuzzParseCard$$' -fuzztime $(FUZZTIME) ./engine/chat/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFile$$' -fuzztime $(FUZZTIME) ./engine/kv/
	$(GO) test -run '^$$' -fuzz '^FuzzSafetensorsHeader$$' -fuzztime $(FUZZTIME) ./engine/convert/
	$(GO) test -run '^$$' -fuzz '^FuzzChatRequest$$' -fuzztime $(FUZZTIME) ./server/

clean:
	rm -rf $(BIN)
