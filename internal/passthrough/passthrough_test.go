package passthrough

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
)

func TestRoundTrip(t *testing.T) {
	var c Codec
	in := &Frame{Data: mem.BufferSlice{mem.SliceBuffer([]byte("wire bytes"))}}
	data, err := c.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if in.Data != nil {
		t.Error("Marshal left the buffers in the frame: they would be freed twice")
	}
	var out Frame
	if err := c.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.Data.Materialize(); !bytes.Equal(got, []byte("wire bytes")) {
		t.Errorf("round trip gave %q", got)
	}
	if c.Name() != "proto" {
		t.Errorf("Name() = %q; want proto", c.Name())
	}
	if _, err := c.Marshal("not a frame"); err == nil {
		t.Error("Marshal of a string succeeded")
	}
	if err := c.Unmarshal(data, new(int)); err == nil {
		t.Error("Unmarshal into an int succeeded")
	}
}
