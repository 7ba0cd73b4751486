// Package muxwire is the multiplexed protocol grpcws.mux.v1 on the wire
// (docs/protocol-mux.md): frame headers, the frame types and their
// payloads, settings, and the errors that close a connection. The bridge,
// the Go client and the tests speak it through this package; its test
// vectors, testdata/vectors.json, are read by the TypeScript client's tests
// too.
package muxwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Subprotocol selects the multiplexed protocol. No route may take it.
const Subprotocol = "grpcws.mux.v1"

// HeaderSize is the size of a frame header.
const HeaderSize = 9

// Type is a frame type.
type Type uint8

// The frame types.
const (
	TypeSettings Type = 0x0
	TypeOpen     Type = 0x1
	TypeData     Type = 0x2
	TypeEndSend  Type = 0x3
	TypeCancel   Type = 0x4
	TypeHeaders  Type = 0x5
	TypeEnd      Type = 0x6
	TypeWindow   Type = 0x7
	TypePing     Type = 0x8
	TypeGoAway   Type = 0x9
	TypeToken    Type = 0xA
)

var typeNames = [...]string{"SETTINGS", "OPEN", "DATA", "END_SEND", "CANCEL", "HEADERS", "END", "WINDOW", "PING", "GOAWAY", "TOKEN"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("0x%02x", uint8(t))
}

// Flags.
const (
	// FlagEndMessage, on DATA, marks the last chunk of a message.
	FlagEndMessage uint8 = 0x1
	// FlagAck, on PING, marks the answer.
	FlagAck uint8 = 0x1
)

// Limits of the wire format.
const (
	// MaxLength is the largest payload a header can state.
	MaxLength = 1<<24 - 1
	// MaxStreamID is the largest stream id.
	MaxStreamID = math.MaxInt32
	// MaxWindow is the largest a window may grow to.
	MaxWindow = math.MaxInt32
	// MinFrameSize is the smallest MAX_FRAME_SIZE a peer may state.
	MinFrameSize = 1024
)

// Header is a frame header.
type Header struct {
	Length   int
	Type     Type
	Flags    uint8
	StreamID uint32
}

// AppendHeader appends the encoding of h to b.
func AppendHeader(b []byte, h Header) []byte {
	return append(b,
		byte(h.Length>>16), byte(h.Length>>8), byte(h.Length),
		byte(h.Type), h.Flags,
		byte(h.StreamID>>24), byte(h.StreamID>>16), byte(h.StreamID>>8), byte(h.StreamID))
}

// AppendFrame appends a whole frame: its header, with the payload's length,
// and the payload.
func AppendFrame(b []byte, typ Type, flags uint8, stream uint32, payload []byte) []byte {
	b = AppendHeader(b, Header{Length: len(payload), Type: typ, Flags: flags, StreamID: stream})
	return append(b, payload...)
}

// ErrMalformed is the error of a frame shorter than its header or whose
// length runs past the end of its WebSocket message.
var ErrMalformed = errors.New("grpcws: malformed frame")

// Next splits the first frame off b, a WebSocket message: its header, its
// payload (a slice of b) and what follows it.
func Next(b []byte) (h Header, payload, rest []byte, err error) {
	if len(b) < HeaderSize {
		return Header{}, nil, nil, ErrMalformed
	}
	h = Header{
		Length:   int(b[0])<<16 | int(b[1])<<8 | int(b[2]),
		Type:     Type(b[3]),
		Flags:    b[4],
		StreamID: binary.BigEndian.Uint32(b[5:9]),
	}
	if h.StreamID > MaxStreamID {
		return Header{}, nil, nil, fmt.Errorf("grpcws: malformed frame: stream id %d has the reserved bit set", h.StreamID)
	}
	b = b[HeaderSize:]
	if len(b) < h.Length {
		return Header{}, nil, nil, ErrMalformed
	}
	return h, b[:h.Length], b[h.Length:], nil
}

// Window returns the payload of a WINDOW frame that grants n bytes.
func Window(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// ParseWindow reads a WINDOW frame's increment: 1 to MaxWindow.
func ParseWindow(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("grpcws: WINDOW payload of %d bytes; want 4", len(p))
	}
	n := binary.BigEndian.Uint32(p)
	if n == 0 || n > MaxWindow {
		return 0, fmt.Errorf("grpcws: WINDOW increment %d out of range (1 to %d)", n, MaxWindow)
	}
	return n, nil
}

// GoAway returns the payload of a GOAWAY frame.
func GoAway(lastStream uint32, reason string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, lastStream), reason...)
}

// ParseGoAway reads a GOAWAY frame's payload.
func ParseGoAway(p []byte) (lastStream uint32, reason string, err error) {
	if len(p) < 4 {
		return 0, "", fmt.Errorf("grpcws: GOAWAY payload of %d bytes; want at least 4", len(p))
	}
	return binary.BigEndian.Uint32(p), string(p[4:]), nil
}

// PingSize is the size of a PING payload.
const PingSize = 8

// Setting ids.
const (
	SettingMaxStreams     uint16 = 0x1
	SettingStreamWindow   uint16 = 0x2
	SettingConnWindow     uint16 = 0x3
	SettingMaxFrameSize   uint16 = 0x4
	SettingMaxMessageSize uint16 = 0x5
	SettingMaxWSMessage   uint16 = 0x6
	settingEntrySize             = 6
	defaultMaxStreams            = 100
	defaultStreamWindow          = 256 << 10
	defaultConnWindow            = 16 << 20
	defaultMaxFrameSize          = 16 << 10
	defaultMaxMessageSize        = 4 << 20
	defaultMaxWSMessage          = 1 << 20
	minWSMessageOverFrame        = HeaderSize
)

// Settings are what one side accepts (docs/protocol-mux.md, section 2).
type Settings struct {
	MaxStreams     uint32 // streams the client may have open at once (the bridge's)
	StreamWindow   uint32 // each stream's initial window for DATA to this side
	ConnWindow     uint32 // the connection's initial window for DATA to this side
	MaxFrameSize   uint32 // the largest DATA payload this side accepts
	MaxMessageSize uint32 // the largest message (the bridge's)
	MaxWSMessage   uint32 // the largest WebSocket message this side accepts
}

// DefaultSettings are the settings of a side that states none.
func DefaultSettings() Settings {
	return Settings{
		MaxStreams:     defaultMaxStreams,
		StreamWindow:   defaultStreamWindow,
		ConnWindow:     defaultConnWindow,
		MaxFrameSize:   defaultMaxFrameSize,
		MaxMessageSize: defaultMaxMessageSize,
		MaxWSMessage:   defaultMaxWSMessage,
	}
}

// Append appends the SETTINGS payload that states s, leaving out the
// entries that equal their defaults.
func (s Settings) Append(b []byte) []byte {
	d := DefaultSettings()
	add := func(id uint16, v, def uint32) {
		if v != def {
			b = binary.BigEndian.AppendUint16(b, id)
			b = binary.BigEndian.AppendUint32(b, v)
		}
	}
	add(SettingMaxStreams, s.MaxStreams, d.MaxStreams)
	add(SettingStreamWindow, s.StreamWindow, d.StreamWindow)
	add(SettingConnWindow, s.ConnWindow, d.ConnWindow)
	add(SettingMaxFrameSize, s.MaxFrameSize, d.MaxFrameSize)
	add(SettingMaxMessageSize, s.MaxMessageSize, d.MaxMessageSize)
	add(SettingMaxWSMessage, s.MaxWSMessage, d.MaxWSMessage)
	return b
}

// ParseSettings reads a SETTINGS payload: the defaults, changed by its
// entries. Unknown ids are ignored.
func ParseSettings(p []byte) (Settings, error) {
	s := DefaultSettings()
	if len(p)%settingEntrySize != 0 {
		return s, fmt.Errorf("grpcws: SETTINGS payload of %d bytes is not a whole number of 6-byte entries", len(p))
	}
	for ; len(p) > 0; p = p[settingEntrySize:] {
		id, v := binary.BigEndian.Uint16(p), binary.BigEndian.Uint32(p[2:])
		switch id {
		case SettingMaxStreams:
			s.MaxStreams = v
		case SettingStreamWindow:
			s.StreamWindow = v
		case SettingConnWindow:
			s.ConnWindow = v
		case SettingMaxFrameSize:
			s.MaxFrameSize = v
		case SettingMaxMessageSize:
			s.MaxMessageSize = v
		case SettingMaxWSMessage:
			s.MaxWSMessage = v
		}
	}
	return s, s.Check()
}

// Check reports settings no peer may state.
func (s Settings) Check() error {
	switch {
	case s.StreamWindow > MaxWindow || s.ConnWindow > MaxWindow:
		return fmt.Errorf("grpcws: SETTINGS window over %d", MaxWindow)
	case s.MaxFrameSize < MinFrameSize || s.MaxFrameSize > MaxLength:
		return fmt.Errorf("grpcws: SETTINGS MAX_FRAME_SIZE %d out of range (%d to %d)", s.MaxFrameSize, MinFrameSize, MaxLength)
	case s.MaxWSMessage < s.MaxFrameSize+minWSMessageOverFrame:
		return fmt.Errorf("grpcws: SETTINGS MAX_WS_MESSAGE %d cannot hold a frame of MAX_FRAME_SIZE %d", s.MaxWSMessage, s.MaxFrameSize)
	}
	return nil
}

// Close codes of the multiplexed protocol, besides v1's for refusals at
// the handshake.
const (
	// CloseProtocolError closes a connection whose client broke the
	// framing: its reason says how.
	CloseProtocolError = 1002
	// CloseUnsupportedData closes a connection that got a text message.
	CloseUnsupportedData = 1003
	// ClosePolicyViolation closes a connection that cancelled or had
	// refused too many streams (rapid reset).
	ClosePolicyViolation = 1008
	// CloseTooBig closes a connection that sent a WebSocket message over
	// MAX_WS_MESSAGE.
	CloseTooBig = 1009
	// CloseGoingAway closes a drained connection.
	CloseGoingAway = 1001
)

// ChurnWindowSeconds is the period over which the stream churn limit
// (limits.mux.max_resets) refills.
const ChurnWindowSeconds = 10
