// Package e2e holds wick's end-to-end tests in a real browser: headless
// Chromium (Debian's chromium package) driven through the DevTools protocol
// opens the chat page that server hosts, downloads a model, and chats with
// the engine's wasm module on WebGPU (SwiftShader) or on its CPU backend.
// The replies are checked token for token against the native engine.
//
// The tests need /usr/bin/chromium (apt-get install -y chromium) and the
// wasm module built into web/ (make wasm); they fail, not skip, without
// them, except under -short.
//
// TestRouting (routing_test.go) runs three wick API servers behind HAProxy
// (deploy/haproxy/) and measures how routing conversations affects the
// prefix cache; it needs haproxy (scripts/install-deps.sh).
package e2e
