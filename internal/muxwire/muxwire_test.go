package muxwire

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/v1wire"
)

type vectors struct {
	Frames []struct {
		Name     string `json:"name"`
		Type     Type   `json:"type"`
		Flags    uint8  `json:"flags"`
		Stream   uint32 `json:"stream"`
		Hex      string `json:"hex"`
		Data     string `json:"data"`
		Settings *struct {
			MaxStreams   uint32 `json:"maxStreams"`
			StreamWindow uint32 `json:"streamWindow"`
		} `json:"settings"`
		Open *struct {
			Route    string              `json:"route"`
			Metadata map[string][]string `json:"metadata"`
			Timeout  string              `json:"timeout"`
		} `json:"open"`
		Headers map[string][]string `json:"headers"`
		End     *struct {
			Code     codes.Code          `json:"code"`
			Message  string              `json:"message"`
			Trailers map[string][]string `json:"trailers"`
		} `json:"end"`
		Window *uint32 `json:"window"`
		GoAway *struct {
			LastStream uint32 `json:"lastStream"`
			Reason     string `json:"reason"`
		} `json:"goaway"`
		Token *string `json:"token"`
	} `json:"frames"`
	Malformed []struct {
		Name string `json:"name"`
		Hex  string `json:"hex"`
	} `json:"malformed"`
}

func readVectors(t testing.TB) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVectors encodes each frame of the vectors from its fields and
// compares the bytes, then decodes the bytes and compares the fields.
func TestVectors(t *testing.T) {
	for _, f := range readVectors(t).Frames {
		t.Run(f.Name, func(t *testing.T) {
			want := unhex(t, f.Hex)
			var payload []byte
			var err error
			switch {
			case f.Type == TypeSettings:
				s := DefaultSettings()
				if f.Settings != nil {
					s.MaxStreams, s.StreamWindow = f.Settings.MaxStreams, f.Settings.StreamWindow
				}
				payload = s.Append(nil)
			case f.Open != nil:
				payload, err = Open(f.Open.Route, metadata.MD(f.Open.Metadata), f.Open.Timeout)
			case f.Headers != nil:
				payload, err = Headers(metadata.MD(f.Headers))
			case f.End != nil:
				payload, err = End(status.New(f.End.Code, f.End.Message), metadata.MD(f.End.Trailers))
			case f.Window != nil:
				payload = Window(*f.Window)
			case f.GoAway != nil:
				payload = GoAway(f.GoAway.LastStream, f.GoAway.Reason)
			case f.Token != nil:
				payload = []byte(*f.Token)
			default:
				payload = unhex(t, f.Data)
			}
			if err != nil {
				t.Fatal(err)
			}
			got := AppendFrame(nil, f.Type, f.Flags, f.Stream, payload)
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n %x\nwant\n %x", got, want)
			}

			h, p, rest, err := Next(want)
			if err != nil || len(rest) != 0 {
				t.Fatalf("Next = %v, %d bytes left", err, len(rest))
			}
			if h.Type != f.Type || h.Flags != f.Flags || h.StreamID != f.Stream || h.Length != len(p) {
				t.Fatalf("header %+v; want type %v flags %d stream %d", h, f.Type, f.Flags, f.Stream)
			}
			switch {
			case f.Type == TypeSettings:
				s, err := ParseSettings(p)
				if err != nil {
					t.Fatal(err)
				}
				if f.Settings != nil && (s.MaxStreams != f.Settings.MaxStreams || s.StreamWindow != f.Settings.StreamWindow) {
					t.Errorf("settings %+v", s)
				}
			case f.Open != nil:
				o, err := ParseOpen(p)
				if err != nil {
					t.Fatal(err)
				}
				md, _ := v1wire.FromMetadata(o.GetMetadata())
				if o.GetRoute() != f.Open.Route || o.GetTimeout() != f.Open.Timeout || len(md) != len(f.Open.Metadata) {
					t.Errorf("open %v", o)
				}
			case f.End != nil:
				st, tr, err := ParseEnd(p)
				if err != nil {
					t.Fatal(err)
				}
				if st.Code() != f.End.Code || st.Message() != f.End.Message || len(tr) != len(f.End.Trailers) {
					t.Errorf("end %v %v", st, tr)
				}
			case f.Window != nil:
				if n, err := ParseWindow(p); err != nil || n != *f.Window {
					t.Errorf("ParseWindow = %d, %v", n, err)
				}
			case f.GoAway != nil:
				if last, reason, err := ParseGoAway(p); err != nil || last != f.GoAway.LastStream || reason != f.GoAway.Reason {
					t.Errorf("ParseGoAway = %d %q %v", last, reason, err)
				}
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	for _, m := range readVectors(t).Malformed {
		if _, _, _, err := Next(unhex(t, m.Hex)); err == nil {
			t.Errorf("%s: Next accepted it", m.Name)
		}
	}
}

// TestNextBatch splits a WebSocket message of several frames.
func TestNextBatch(t *testing.T) {
	b := AppendFrame(nil, TypeData, FlagEndMessage, 1, []byte("one"))
	b = AppendFrame(b, TypeEndSend, 0, 1, nil)
	b = AppendFrame(b, TypeData, 0, 3, []byte("two"))
	var got []string
	for len(b) > 0 {
		h, p, rest, err := Next(b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Type.String()+":"+string(p))
		b = rest
	}
	if strings.Join(got, " ") != "DATA:one END_SEND: DATA:two" {
		t.Errorf("frames %v", got)
	}
}

func TestSettingsChecks(t *testing.T) {
	for _, s := range []Settings{
		{StreamWindow: MaxWindow + 1, MaxFrameSize: 16384, MaxWSMessage: 1 << 20},
		{MaxFrameSize: 100, MaxWSMessage: 1 << 20},
		{MaxFrameSize: 16384, MaxWSMessage: 16384},
	} {
		full := DefaultSettings()
		full.StreamWindow, full.MaxFrameSize, full.MaxWSMessage = max(s.StreamWindow, 1), s.MaxFrameSize, s.MaxWSMessage
		if _, err := ParseSettings(full.Append(nil)); err == nil {
			t.Errorf("ParseSettings accepted %+v", full)
		}
	}
	if _, err := ParseSettings([]byte{0, 1, 0}); err == nil {
		t.Error("ParseSettings accepted a partial entry")
	}
	s, err := ParseSettings([]byte{0, 0x7f, 0, 0, 0, 1})
	if err != nil || s != DefaultSettings() {
		t.Errorf("an unknown id: %+v, %v; want the defaults", s, err)
	}
}

func TestParseWindow(t *testing.T) {
	for _, p := range [][]byte{{0, 0, 0, 0}, {0x80, 0, 0, 0}, {0, 1}} {
		if _, err := ParseWindow(p); err == nil {
			t.Errorf("ParseWindow(%x) accepted it", p)
		}
	}
}

func TestEndDetails(t *testing.T) {
	st, err := status.New(codes.FailedPrecondition, "précondition").WithDetails(&grpcwsv1.EndSend{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := End(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := ParseEnd(p)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.Proto(), st.Proto()) {
		t.Errorf("round trip %v; want %v", got.Proto(), st.Proto())
	}
}

// FuzzNext splits arbitrary bytes into frames and parses each payload as
// its type says: nothing panics, and a header read back encodes to the
// same bytes.
func FuzzNext(f *testing.F) {
	for _, v := range readVectors(f).Frames {
		b, _ := hex.DecodeString(strings.ReplaceAll(v.Hex, " ", ""))
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			h, p, rest, err := Next(b)
			if err != nil {
				return
			}
			if enc := AppendHeader(nil, h); !bytes.Equal(enc, b[:HeaderSize]) {
				t.Fatalf("header %+v encodes to %x; read from %x", h, enc, b[:HeaderSize])
			}
			switch h.Type {
			case TypeSettings:
				_, _ = ParseSettings(p)
			case TypeOpen:
				_, _ = ParseOpen(p)
			case TypeHeaders:
				_, _ = ParseHeaders(p)
			case TypeEnd:
				_, _, _ = ParseEnd(p)
			case TypeWindow:
				_, _ = ParseWindow(p)
			case TypeGoAway:
				_, _, _ = ParseGoAway(p)
			}
			b = rest
		}
	})
}
