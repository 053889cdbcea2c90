module github.com/wick-run/wick

go 1.26.8

require (
	github.com/cogentcore/webgpu v0.23.0 // indirect
	github.com/eliben/go-sentencepiece v0.6.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
