module github.com/wick-run/wick

go 1.26.8

require (
	github.com/andybalholm/brotli v1.3.0 // indirect
	github.com/cogentcore/webgpu v0.23.0 // indirect
	github.com/eliben/go-sentencepiece v0.6.0 // indirect
	github.com/tetratelabs/wazero v1.12.0 // indirect
	golang.org/x/sys v0.44.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
