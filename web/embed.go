// Package web holds the browser side of wick (the chat page, its worker and
// scripts, and the engine's wasm module) embedded into the wick binary, so
// that `wick serve` needs nothing beside the model directories.
package web

import "embed"

// Assets is this folder's file tree as the server hosts it at /. Everything
// in the folder is embedded, so that files built later (the wasm module)
// need no change here; the server serves only files of web types (html, js,
// css, wasm, json, images), never Go sources or notes. Files whose names
// begin with "." or "_" are left out by go:embed.
//
//go:embed *
var Assets embed.FS
