// Package trainparity checks that wick runs the default model exactly as the
// trainer computed it: the logits of wick's CPU backend on fixed tokens
// against the trainer's own int8 forward pass, saved as a fixture by
// train/fixture.py when the model was exported. It holds only tests.
package trainparity
