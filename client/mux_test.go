package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/client"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// The tests of this file run the client against a scripted peer (see
// mux_peer_test.go) and check the frames it writes.

const (
	bidiMethod   = "/examples.echo.v1.EchoService/Bidi"
	tickerMethod = "/examples.echo.v1.EchoService/Ticker"
)

var (
	bidiDesc   = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	tickerDesc = &grpc.StreamDesc{ServerStreams: true}
)

// await returns what c delivers, waiting up to 5s.
func await[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out after 5s")
		var zero T
		return zero
	}
}

// rawStream starts a stream whose messages are raw bytes (*[]byte).
func rawStream(t *testing.T, ctx context.Context, conn *client.Conn, desc *grpc.StreamDesc, method string) grpc.ClientStream {
	t.Helper()
	cs, err := conn.NewStream(ctx, desc, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	return cs
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func smallSettings() muxwire.Settings {
	s := muxwire.DefaultSettings()
	s.MaxFrameSize = muxwire.MinFrameSize
	return s
}

func TestMuxUnary(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	ctx, cancel := context.WithTimeout(testContext(t), 5*time.Second)
	defer cancel()
	bin := "\x00\xff\x10"
	ctx = metadata.AppendToOutgoingContext(ctx, "x-k", "v", "x-k", "w", "x-b-bin", bin)

	type result struct {
		res             *echov1.EchoResponse
		header, trailer metadata.MD
		err             error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.res, r.err = echov1.NewEchoServiceClient(conn).Echo(ctx, &echov1.EchoRequest{Message: "hi"}, grpc.Header(&r.header), grpc.Trailer(&r.trailer))
		done <- r
	}()

	s := p.accept(t)
	if got := strings.Join(s.offer, ","); got != muxwire.Subprotocol {
		t.Errorf("offered subprotocols %q; want %q alone", got, muxwire.Subprotocol)
	}
	if got := s.header.Get("Grpc-Timeout"); got != "" {
		t.Errorf("handshake Grpc-Timeout %q; want none: deadlines are per stream", got)
	}
	f := s.expect(t, muxwire.TypeOpen, 1)
	open, err := muxwire.ParseOpen(f.P)
	if err != nil {
		t.Fatal(err)
	}
	if open.GetRoute() != "examples.echo.v1.EchoService.Echo" {
		t.Errorf("OPEN route %q", open.GetRoute())
	}
	md, err := v1wire.FromMetadata(open.GetMetadata())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(md.Get("x-k"), []string{"v", "w"}) || !slices.Equal(md.Get("x-b-bin"), []string{bin}) {
		t.Errorf("OPEN metadata %v; want x-k: [v w], x-b-bin: [%q]", md, bin)
	}
	if d, err := grpcheader.ParseTimeout(open.GetTimeout()); err != nil || d <= 0 || d > 5*time.Second {
		t.Errorf("OPEN timeout %q (%v, %v); want at most 5s", open.GetTimeout(), d, err)
	}
	f = s.expect(t, muxwire.TypeData, 1)
	var req echov1.EchoRequest
	if f.Flags != muxwire.FlagEndMessage || proto.Unmarshal(f.P, &req) != nil || req.GetMessage() != "hi" {
		t.Fatalf("DATA flags %d, %x; want the request with END_MESSAGE", f.Flags, f.P)
	}
	s.send(t,
		headersFrame(t, 1, metadata.Pairs("x-h", "1")),
		dataFrame(1, true, mustMarshal(t, &echov1.EchoResponse{Message: "hi back"})),
		endFrame(t, 1, status.New(codes.OK, ""), metadata.Pairs("x-t", "2")))
	r := await(t, done)
	if r.err != nil || r.res.GetMessage() != "hi back" {
		t.Fatalf("Echo = %v, %v; want hi back", r.res, r.err)
	}
	if !slices.Equal(r.header.Get("x-h"), []string{"1"}) || !slices.Equal(r.trailer.Get("x-t"), []string{"2"}) {
		t.Errorf("header %v, trailer %v; want x-h: 1 and x-t: 2", r.header, r.trailer)
	}
	// A unary RPC needs no END_SEND (the bridge half-closes after the
	// request), and one that ended needs no CANCEL.
	s.none(t, 100*time.Millisecond)
}

func TestMuxStatus(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	stream, err := echov1.NewEchoServiceClient(conn).Upload(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)
	st, err := status.New(codes.NotFound, "nicht gefunden").WithDetails(&errdetails.ErrorInfo{Reason: "GONE"})
	if err != nil {
		t.Fatal(err)
	}
	// Trailers-only: END and no HEADERS.
	s.send(t, endFrame(t, 1, st, metadata.Pairs("x-t", "v")))
	_, err = stream.CloseAndRecv()
	got := status.Convert(err)
	if got.Code() != codes.NotFound || got.Message() != "nicht gefunden" || len(got.Details()) != 1 {
		t.Fatalf("CloseAndRecv = %v; want NOT_FOUND nicht gefunden with one detail", err)
	}
	if info, ok := got.Details()[0].(*errdetails.ErrorInfo); !ok || info.GetReason() != "GONE" {
		t.Errorf("detail %v; want ErrorInfo GONE", got.Details()[0])
	}
	if h, err := stream.Header(); h != nil || err != nil {
		t.Errorf("Header = %v, %v; want nil, nil", h, err)
	}
	if tr := stream.Trailer(); !slices.Equal(tr.Get("x-t"), []string{"v"}) {
		t.Errorf("Trailer = %v; want x-t: v", tr)
	}
}

// TestMuxEndSend checks the half-close of the two kinds of method, and
// that an empty message is one empty DATA frame.
func TestMuxEndSend(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	echo := echov1.NewEchoServiceClient(conn)

	up, err := echo.Upload(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Send(&echov1.UploadRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := up.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := up.Send(&echov1.UploadRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("Send after CloseSend = %v; want INTERNAL", err)
	}
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)
	if f := s.expect(t, muxwire.TypeData, 1); len(f.P) != 0 || f.Flags != muxwire.FlagEndMessage {
		t.Errorf("empty message: DATA of %d bytes, flags %d; want 0 bytes with END_MESSAGE", len(f.P), f.Flags)
	}
	s.expect(t, muxwire.TypeEndSend, 1)

	// Server streaming: one request, no END_SEND.
	tick, err := echo.Ticker(testContext(t), &echov1.TickerRequest{Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := tick.CloseSend(); err != nil {
		t.Fatal(err)
	}
	s.expect(t, muxwire.TypeOpen, 2)
	s.expect(t, muxwire.TypeData, 2)
	s.none(t, 100*time.Millisecond)
	if p.upgrades.Load() != 1 {
		t.Errorf("%d upgrades; want 1", p.upgrades.Load())
	}
}

// TestMuxBatchAndInterleave checks that frames ready at the same moment go
// in one WebSocket message, that large messages go in chunks of at most
// the bridge's MAX_FRAME_SIZE, interleaved between streams, and that no
// WebSocket message is over the bridge's MAX_WS_MESSAGE.
func TestMuxBatchAndInterleave(t *testing.T) {
	t.Parallel()
	settings := smallSettings() // 1 KiB frames
	settings.ConnWindow = 0     // nothing moves until the peer grants
	settings.MaxWSMessage = 8 << 10
	p := newPeer(t, settings)
	conn := p.client(t)
	ctx := testContext(t)

	const size = 3000
	streams := []grpc.ClientStream{rawStream(t, ctx, conn, bidiDesc, bidiMethod), rawStream(t, ctx, conn, bidiDesc, bidiMethod)}
	started := make(chan struct{}, 2)
	sent := make(chan error, 2)
	for i, cs := range streams {
		msg := bytes.Repeat([]byte{byte('a' + i)}, size)
		go func() {
			started <- struct{}{}
			sent <- cs.SendMsg(&msg)
		}()
	}
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)
	s.expect(t, muxwire.TypeOpen, 2)
	await(t, started)
	await(t, started)
	s.none(t, 100*time.Millisecond) // a connection window of 0: no DATA
	select {
	case err := <-sent:
		t.Fatalf("SendMsg returned %v with no window", err)
	default:
	}

	s.send(t, windowFrame(0, 1<<20))
	var order []uint32
	got := map[uint32][]byte{}
	msgs := map[int]bool{}
	for ended := 0; ended < 2; {
		f := s.next(t)
		if f.Type != muxwire.TypeData {
			t.Fatalf("got %v; want DATA", f.Type)
		}
		if len(f.P) > int(settings.MaxFrameSize) {
			t.Errorf("DATA of %d bytes; the bridge's MAX_FRAME_SIZE is %d", len(f.P), settings.MaxFrameSize)
		}
		order = append(order, f.StreamID)
		got[f.StreamID] = append(got[f.StreamID], f.P...)
		msgs[f.Msg] = true
		if f.Flags&muxwire.FlagEndMessage != 0 {
			ended++
		}
	}
	for i, id := range []uint32{1, 2} {
		if want := bytes.Repeat([]byte{byte('a' + i)}, size); !bytes.Equal(got[id], want) {
			t.Errorf("stream %d: %d bytes; want %d of %q", id, len(got[id]), size, rune('a'+i))
		}
	}
	if len(msgs) != 1 {
		t.Errorf("the 6 chunks, ready together, came in %d WebSocket messages; want 1", len(msgs))
	}
	if !slices.Equal(order, []uint32{1, 2, 1, 2, 1, 2}) && !slices.Equal(order, []uint32{2, 1, 2, 1, 2, 1}) {
		t.Errorf("chunks by stream %v; want the two streams in turn", order)
	}
	for range 2 {
		if err := await(t, sent); err != nil {
			t.Errorf("SendMsg: %v", err)
		}
	}

	// One large message fills WebSocket messages up to MAX_WS_MESSAGE.
	big := bytes.Repeat([]byte("z"), 40<<10)
	go func() { sent <- streams[0].SendMsg(&big) }()
	var n, last int
	largest := 0
	msgs = map[int]bool{}
	for n < len(big) {
		f := s.expect(t, muxwire.TypeData, 1)
		n += len(f.P)
		msgs[f.Msg] = true
		largest = max(largest, f.MsgLen)
		last = int(f.Flags)
	}
	if err := await(t, sent); err != nil {
		t.Fatal(err)
	}
	if n != len(big) || last != int(muxwire.FlagEndMessage) {
		t.Errorf("%d bytes, last flags %d; want %d with END_MESSAGE", n, last, len(big))
	}
	if largest > int(settings.MaxWSMessage) || len(msgs) < 5 {
		t.Errorf("%d WebSocket messages, the largest %d bytes; want at least 5 of at most %d", len(msgs), largest, settings.MaxWSMessage)
	}
}

// TestMuxSendWindow checks that SendMsg sends no more than the bridge
// granted, waits for WINDOW frames, and gives up when its context ends.
func TestMuxSendWindow(t *testing.T) {
	t.Parallel()
	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		settings := muxwire.DefaultSettings()
		settings.StreamWindow = 1024
		p := newPeer(t, settings)
		conn := p.client(t)
		ctx, cancel := context.WithCancel(testContext(t))
		defer cancel()
		cs := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
		msg := bytes.Repeat([]byte("w"), 3000)
		sent := make(chan error, 1)
		go func() { sent <- cs.SendMsg(&msg) }()

		s := p.accept(t)
		s.expect(t, muxwire.TypeOpen, 1)
		// readData reads n bytes of DATA and returns the last frame's flags.
		readData := func(n int) uint8 {
			var f peerFrame
			for got := 0; got < n; got += len(f.P) {
				f = s.expect(t, muxwire.TypeData, 1)
			}
			return f.Flags
		}
		pending := func() {
			t.Helper()
			s.none(t, 50*time.Millisecond)
			select {
			case err := <-sent:
				t.Fatalf("SendMsg returned %v before its message had gone out", err)
			default:
			}
		}
		readData(1024)
		pending()
		s.send(t, windowFrame(1, 1000))
		readData(1000)
		pending()
		s.send(t, windowFrame(1, 2000))
		if flags := readData(976); flags != muxwire.FlagEndMessage {
			t.Errorf("last chunk flags %d; want END_MESSAGE", flags)
		}
		if err := await(t, sent); err != nil {
			t.Fatalf("SendMsg = %v", err)
		}

		// Blocked on the window, SendMsg returns when the context ends,
		// and the stream is cancelled.
		go func() { sent <- cs.SendMsg(&msg) }()
		readData(1024) // what is left of the last grant
		pending()
		cancel()
		if err := await(t, sent); !errors.Is(err, io.EOF) {
			t.Errorf("SendMsg after cancel = %v; want io.EOF", err)
		}
		s.expect(t, muxwire.TypeCancel, 1)
		var got []byte
		if err := cs.RecvMsg(&got); status.Code(err) != codes.Canceled {
			t.Errorf("RecvMsg = %v; want CANCELLED", err)
		}
	})
	t.Run("connection", func(t *testing.T) {
		t.Parallel()
		settings := muxwire.DefaultSettings()
		settings.ConnWindow = 1024
		p := newPeer(t, settings)
		conn := p.client(t)
		ctx := testContext(t)
		a := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
		b := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
		s := p.accept(t)
		s.expect(t, muxwire.TypeOpen, 1)
		s.expect(t, muxwire.TypeOpen, 2)
		msg := bytes.Repeat([]byte("c"), 1000)
		if err := a.SendMsg(&msg); err != nil {
			t.Fatal(err)
		}
		if f := s.expect(t, muxwire.TypeData, 1); len(f.P) != 1000 {
			t.Fatalf("DATA of %d bytes; want 1000", len(f.P))
		}
		sent := make(chan error, 1)
		go func() { sent <- b.SendMsg(&msg) }()
		if f := s.expect(t, muxwire.TypeData, 2); len(f.P) != 24 || f.Flags != 0 {
			t.Fatalf("DATA of %d bytes, flags %d; want the 24 bytes left of the connection's window", len(f.P), f.Flags)
		}
		s.none(t, 50*time.Millisecond)
		s.send(t, windowFrame(2, 5000)) // the stream's window is not the limit
		s.none(t, 50*time.Millisecond)
		s.send(t, windowFrame(0, 976))
		if f := s.expect(t, muxwire.TypeData, 2); len(f.P) != 976 || f.Flags != muxwire.FlagEndMessage {
			t.Fatalf("DATA of %d bytes, flags %d; want 976 with END_MESSAGE", len(f.P), f.Flags)
		}
		if err := await(t, sent); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMuxRecvCredit checks that the client grants credit as RecvMsg takes
// messages, and not before.
func TestMuxRecvCredit(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	local := muxwire.DefaultSettings()
	local.StreamWindow = 4096
	local.ConnWindow = 4096
	conn := p.client(t, client.WithMuxSettings(local))
	cs := rawStream(t, testContext(t), conn, tickerDesc, tickerMethod)
	s := p.accept(t)
	f := s.expect(t, muxwire.TypeSettings, 0)
	if got, err := muxwire.ParseSettings(f.P); err != nil || got != local {
		t.Fatalf("client SETTINGS %+v, %v; want %+v", got, err, local)
	}
	s.expect(t, muxwire.TypeOpen, 1)

	chunk := bytes.Repeat([]byte("r"), 1024)
	s.send(t, dataFrame(1, true, chunk), dataFrame(1, true, chunk))
	s.none(t, 100*time.Millisecond) // nothing taken, no credit
	var got []byte
	if err := cs.RecvMsg(&got); err != nil || len(got) != 1024 {
		t.Fatalf("RecvMsg = %d bytes, %v", len(got), err)
	}
	s.none(t, 100*time.Millisecond) // a quarter of the window: not yet
	if err := cs.RecvMsg(&got); err != nil || len(got) != 1024 {
		t.Fatalf("RecvMsg = %d bytes, %v", len(got), err)
	}
	// Half of each window consumed: stream and connection credit.
	seen := map[uint32]uint32{}
	for range 2 {
		f := s.next(t)
		n, err := muxwire.ParseWindow(f.P)
		if f.Type != muxwire.TypeWindow || err != nil {
			t.Fatalf("got %v (%v); want WINDOW", f.Type, err)
		}
		seen[f.StreamID] += n
	}
	if seen[1] != 2048 || seen[0] != 2048 {
		t.Errorf("credit %v; want 2048 for stream 1 and for the connection", seen)
	}
	s.none(t, 50*time.Millisecond)

	// A message larger than the window is assembled as it comes: credit
	// flows back while RecvMsg waits for the rest.
	big := bytes.Repeat([]byte("B"), 10<<10)
	recvd := make(chan error, 1)
	go func() {
		var m []byte
		err := cs.RecvMsg(&m)
		if err == nil && !bytes.Equal(m, big) {
			err = errors.New("wrong bytes")
		}
		recvd <- err
	}()
	streamW, connW := int64(4096), int64(4096)
	for off := 0; off < len(big); {
		if streamW == 0 || connW == 0 {
			f := s.next(t)
			n, err := muxwire.ParseWindow(f.P)
			if f.Type != muxwire.TypeWindow || err != nil {
				t.Fatalf("got %v (%v); want WINDOW", f.Type, err)
			}
			if f.StreamID == 0 {
				connW += int64(n)
			} else {
				streamW += int64(n)
			}
			continue
		}
		n := min(1024, len(big)-off, int(streamW), int(connW))
		s.send(t, dataFrame(1, off+n == len(big), big[off:off+n]))
		off += n
		streamW -= int64(n)
		connW -= int64(n)
	}
	if err := await(t, recvd); err != nil {
		t.Fatalf("RecvMsg of a message over the window: %v", err)
	}
}

// TestMuxStalledStream checks, from the client's side, that a stream whose
// RecvMsg is not called gets no credit, and that another stream runs on
// through the same connection meanwhile. The peer sends only within the
// windows the client granted, as the bridge does.
func TestMuxStalledStream(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	local := smallSettings()
	local.StreamWindow = 4096
	local.ConnWindow = 16384
	conn := p.client(t, client.WithMuxSettings(local))
	ctx := testContext(t)
	stalled := rawStream(t, ctx, conn, tickerDesc, tickerMethod)
	active := rawStream(t, ctx, conn, tickerDesc, tickerMethod)
	s := p.accept(t)
	s.expect(t, muxwire.TypeSettings, 0)
	s.expect(t, muxwire.TypeOpen, 1)
	s.expect(t, muxwire.TypeOpen, 2)

	const n = 64 // 64 KiB through the active stream: 16 of its windows, 4 of the connection's
	received := make(chan int, 1)
	go func() {
		i := 0
		for ; i < n; i++ {
			var m []byte
			if err := active.RecvMsg(&m); err != nil || len(m) != 1024 {
				break
			}
		}
		received <- i
	}()

	chunk := bytes.Repeat([]byte("s"), 1024)
	connW, window := int64(local.ConnWindow), map[uint32]int64{1: 4096, 2: 4096}
	for range 4 { // fill the stalled stream's window
		s.send(t, dataFrame(1, true, chunk))
	}
	connW -= 4096
	window[1] = 0
	sent := 0
	for i := 0; sent < n && i < 10*n; i++ {
		if window[2] >= 1024 && connW >= 1024 {
			s.send(t, dataFrame(2, true, chunk))
			window[2] -= 1024
			connW -= 1024
			sent++
			continue
		}
		f := s.next(t)
		if f.Type != muxwire.TypeWindow {
			t.Fatalf("got %v; want WINDOW", f.Type)
		}
		inc, _ := muxwire.ParseWindow(f.P)
		if f.StreamID == 1 {
			t.Fatal("the stalled stream got credit without a RecvMsg")
		}
		if f.StreamID == 0 {
			connW += int64(inc)
		} else {
			window[f.StreamID] += int64(inc)
		}
	}
	if got := await(t, received); got != n {
		t.Fatalf("the active stream received %d messages; want %d", got, n)
	}
	// The stalled stream's messages are all there, and taking them grants
	// its credit.
	for range 4 {
		var m []byte
		if err := stalled.RecvMsg(&m); err != nil || len(m) != 1024 {
			t.Fatalf("stalled RecvMsg = %d bytes, %v", len(m), err)
		}
	}
	credit := uint32(0)
	for credit < 2048 {
		f := s.next(t)
		if f.Type == muxwire.TypeWindow && f.StreamID == 1 {
			inc, _ := muxwire.ParseWindow(f.P)
			credit += inc
		}
	}
}

func TestMuxCancel(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	ctx, cancel := context.WithCancel(testContext(t))
	cs := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)
	cancel()
	s.expect(t, muxwire.TypeCancel, 1)
	var m []byte
	if err := cs.RecvMsg(&m); status.Code(err) != codes.Canceled {
		t.Errorf("RecvMsg after cancel = %v; want CANCELLED", err)
	}
	if err := cs.SendMsg(&m); !errors.Is(err, io.EOF) {
		t.Errorf("SendMsg after cancel = %v; want io.EOF", err)
	}
	// Frames that crossed the CANCEL are ignored; the socket goes on.
	s.send(t, headersFrame(t, 1, nil), dataFrame(1, true, []byte("late")), endFrame(t, 1, status.New(codes.OK, ""), nil))
	done := make(chan error, 1)
	go func() {
		_, err := echov1.NewEchoServiceClient(conn).Echo(testContext(t), &echov1.EchoRequest{})
		done <- err
	}()
	s.expect(t, muxwire.TypeOpen, 2)
	s.expect(t, muxwire.TypeData, 2)
	s.send(t, dataFrame(2, true, nil), endFrame(t, 2, status.New(codes.OK, ""), nil))
	if err := await(t, done); err != nil {
		t.Fatalf("Echo after a cancelled stream: %v", err)
	}
	if p.upgrades.Load() != 1 {
		t.Errorf("%d upgrades; want 1", p.upgrades.Load())
	}
}

func TestMuxDeadline(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	ctx, cancel := context.WithTimeout(testContext(t), 300*time.Millisecond)
	defer cancel()
	cs := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	s := p.accept(t)
	open, err := muxwire.ParseOpen(s.expect(t, muxwire.TypeOpen, 1).P)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := grpcheader.ParseTimeout(open.GetTimeout()); err != nil || d <= 0 || d > 300*time.Millisecond {
		t.Errorf("OPEN timeout %q (%v, %v); want at most 300ms", open.GetTimeout(), d, err)
	}
	var m []byte
	if err := cs.RecvMsg(&m); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("RecvMsg = %v; want DEADLINE_EXCEEDED", err)
	}
	s.expect(t, muxwire.TypeCancel, 1)
	// A context already past its deadline starts nothing.
	if _, err := conn.NewStream(ctx, bidiDesc, bidiMethod); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("NewStream after the deadline = %v; want DEADLINE_EXCEEDED", err)
	}
}

func TestMuxRecvTooLarge(t *testing.T) {
	t.Parallel()
	p := newPeer(t, smallSettings())
	conn := p.client(t)
	cs, err := conn.NewStream(testContext(t), tickerDesc, tickerMethod, grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(1500))
	if err != nil {
		t.Fatal(err)
	}
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)
	s.send(t, dataFrame(1, false, make([]byte, 1000)), dataFrame(1, true, make([]byte, 1000)))
	var m []byte
	if err := cs.RecvMsg(&m); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("RecvMsg of 2000 bytes over a limit of 1500 = %v; want RESOURCE_EXHAUSTED", err)
	}
	for {
		// The credit for the chunk taken may come first.
		if f := s.next(t); f.Type == muxwire.TypeCancel && f.StreamID == 1 {
			break
		} else if f.Type != muxwire.TypeWindow {
			t.Fatalf("got %v; want CANCEL", f.Type)
		}
	}
}

func TestMuxPing(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	rawStream(t, testContext(t), conn, bidiDesc, bidiMethod)
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)
	data := []byte{0, 0, 0, 0, 0, 0, 0, 42}
	s.send(t, muxwire.AppendFrame(nil, muxwire.TypePing, 0, 0, data))
	f := s.expect(t, muxwire.TypePing, 0)
	if f.Flags != muxwire.FlagAck || !bytes.Equal(f.P, data) {
		t.Errorf("PING flags %d, %x; want ACK with %x", f.Flags, f.P, data)
	}
	// An ACK is not answered.
	s.send(t, muxwire.AppendFrame(nil, muxwire.TypePing, muxwire.FlagAck, 0, data))
	s.none(t, 100*time.Millisecond)
}

// TestMuxProtocolErrors feeds the client what the bridge may not send:
// every stream fails and the client closes the socket with 1002 (1003 for
// a text message).
func TestMuxProtocolErrors(t *testing.T) {
	t.Parallel()
	open := muxwire.AppendFrame(nil, muxwire.TypeOpen, 0, 3, nil)
	for _, tt := range []struct {
		name   string
		frames []byte
		text   bool
		code   websocket.StatusCode
		reason string
	}{
		{name: "frame shorter than its header", frames: []byte{0, 0, 0, 2, 0}, reason: "grpcws: malformed frame"},
		{name: "length past the end", frames: append(muxwire.AppendHeader(nil, muxwire.Header{Length: 10, Type: muxwire.TypeData, StreamID: 1}), 1, 2), reason: "grpcws: malformed frame"},
		{name: "unknown frame type", frames: muxwire.AppendFrame(nil, 0x0b, 0, 0, nil), reason: "grpcws: unknown frame type 0x0b"},
		{name: "HEADERS on stream 0", frames: muxwire.AppendFrame(nil, muxwire.TypeHeaders, 0, 0, nil)},
		{name: "DATA on a stream never opened", frames: dataFrame(9, true, nil), reason: "grpcws: stream 9 never opened"},
		{name: "second SETTINGS", frames: settingsFrame(muxwire.DefaultSettings())},
		{name: "WINDOW of 0", frames: muxwire.AppendFrame(nil, muxwire.TypeWindow, 0, 0, []byte{0, 0, 0, 0})},
		{name: "WINDOW past 2^31-1", frames: windowFrame(1, muxwire.MaxWindow)},
		{name: "PING of 4 bytes", frames: muxwire.AppendFrame(nil, muxwire.TypePing, 0, 0, []byte{1, 2, 3, 4})},
		{name: "OPEN from the bridge", frames: open},
		{name: "END that does not parse", frames: muxwire.AppendFrame(nil, muxwire.TypeEnd, 0, 1, []byte{0xff})},
		{name: "DATA over MAX_FRAME_SIZE", frames: dataFrame(1, true, make([]byte, 1025))},
		{name: "DATA over the stream's window", frames: slices.Concat(dataFrame(1, false, make([]byte, 1024)), dataFrame(1, false, make([]byte, 1024)), dataFrame(1, true, make([]byte, 1))), reason: "grpcws: flow control: window exceeded"},
		{name: "text message", text: true, code: websocket.StatusUnsupportedData},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newPeer(t, muxwire.DefaultSettings())
			local := smallSettings()
			local.StreamWindow = 2048
			conn := p.client(t, client.WithMuxSettings(local))
			ctx := testContext(t)
			a := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
			b := rawStream(t, ctx, conn, tickerDesc, tickerMethod)
			s := p.accept(t)
			s.expect(t, muxwire.TypeSettings, 0)
			s.expect(t, muxwire.TypeOpen, 1)
			s.expect(t, muxwire.TypeOpen, 2)
			if tt.text {
				if err := s.ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
					t.Fatal(err)
				}
			} else {
				s.send(t, tt.frames)
			}
			for i, cs := range []grpc.ClientStream{a, b} {
				var m []byte
				if err := cs.RecvMsg(&m); status.Code(err) != codes.Internal {
					t.Errorf("stream %d: RecvMsg = %v; want INTERNAL", i+1, err)
				}
			}
			want := tt.code
			if want == 0 {
				want = muxwire.CloseProtocolError
			}
			code, reason := s.closed(t)
			if code != want || (tt.reason != "" && reason != tt.reason) {
				t.Errorf("close %d %q; want %d %q", code, reason, want, tt.reason)
			}
			// The next RPC opens a new socket.
			go conn.NewStream(ctx, bidiDesc, bidiMethod)
			p.accept(t)
		})
	}
}

func TestMuxSocketLoss(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		close func(*peerSocket)
	}{
		{"going away", func(s *peerSocket) { s.ws.Close(websocket.StatusGoingAway, "") }},
		{"dropped", func(s *peerSocket) { s.ws.CloseNow() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newPeer(t, muxwire.DefaultSettings())
			conn := p.client(t)
			ctx := testContext(t)
			a := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
			b := rawStream(t, ctx, conn, tickerDesc, tickerMethod)
			s := p.accept(t)
			s.expect(t, muxwire.TypeOpen, 1)
			s.expect(t, muxwire.TypeOpen, 2)
			// A message that arrived before the loss is still received.
			s.send(t, dataFrame(2, true, []byte("kept")))
			tt.close(s)
			var m []byte
			if err := a.RecvMsg(&m); status.Code(err) != codes.Unavailable {
				t.Errorf("RecvMsg = %v; want UNAVAILABLE", err)
			}
			if err := b.RecvMsg(&m); err != nil || string(m) != "kept" {
				t.Errorf("RecvMsg = %q, %v; want the message received before the loss", m, err)
			}
			if err := b.RecvMsg(&m); status.Code(err) != codes.Unavailable {
				t.Errorf("RecvMsg = %v; want UNAVAILABLE", err)
			}
			// The next RPC reconnects.
			rawStream(t, ctx, conn, bidiDesc, bidiMethod)
			p.accept(t).expect(t, muxwire.TypeOpen, 1)
			if got := p.upgrades.Load(); got != 2 {
				t.Errorf("%d upgrades; want 2", got)
			}
		})
	}
}

// TestMuxHandshakeFailures checks RPCs on a socket that never becomes
// usable.
func TestMuxHandshakeFailures(t *testing.T) {
	t.Parallel()
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		p := newPeer(t, muxwire.DefaultSettings())
		p.refuse = v1wire.CloseCode(codes.Unauthenticated)
		conn := p.client(t)
		_, err := echov1.NewEchoServiceClient(conn).Echo(testContext(t), &echov1.EchoRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("Echo = %v; want UNAUTHENTICATED", err)
		}
	})
	t.Run("not SETTINGS first", func(t *testing.T) {
		t.Parallel()
		p := newPeer(t, muxwire.DefaultSettings())
		p.first = windowFrame(0, 1)
		conn := p.client(t)
		done := make(chan error, 1)
		go func() {
			_, err := echov1.NewEchoServiceClient(conn).Echo(testContext(t), &echov1.EchoRequest{})
			done <- err
		}()
		s := p.accept(t)
		if err := await(t, done); status.Code(err) != codes.Internal {
			t.Errorf("Echo = %v; want INTERNAL", err)
		}
		if code, _ := s.closed(t); code != muxwire.CloseProtocolError {
			t.Errorf("close %d; want 1002", code)
		}
	})
}

// TestMuxGoAway checks that after GOAWAY new RPCs go to a new socket at
// once, while the streams of the old one finish there, and that the old
// one is closed once they have.
func TestMuxGoAway(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	ctx := testContext(t)
	old := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	s1 := p.accept(t)
	s1.expect(t, muxwire.TypeOpen, 1)
	s1.roundTrip(t, muxwire.AppendFrame(nil, muxwire.TypeGoAway, 0, 0, muxwire.GoAway(1, "grpcws: bridge shutting down")))

	done := make(chan error, 1)
	go func() {
		_, err := echov1.NewEchoServiceClient(conn).Echo(ctx, &echov1.EchoRequest{})
		done <- err
	}()
	s2 := p.accept(t)
	s2.expect(t, muxwire.TypeOpen, 1)
	s2.expect(t, muxwire.TypeData, 1)
	s2.send(t, dataFrame(1, true, nil), endFrame(t, 1, status.New(codes.OK, ""), nil))
	if err := await(t, done); err != nil {
		t.Fatal(err)
	}

	// The old stream goes on where it was.
	msg := []byte("still here")
	if err := old.SendMsg(&msg); err != nil {
		t.Fatal(err)
	}
	if f := s1.expect(t, muxwire.TypeData, 1); string(f.P) != "still here" {
		t.Errorf("DATA %q", f.P)
	}
	s1.send(t, dataFrame(1, true, []byte("bye")), endFrame(t, 1, status.New(codes.OK, ""), nil))
	var m []byte
	if err := old.RecvMsg(&m); err != nil || string(m) != "bye" {
		t.Fatalf("RecvMsg = %q, %v", m, err)
	}
	if err := old.RecvMsg(&m); !errors.Is(err, io.EOF) {
		t.Fatalf("RecvMsg = %v; want io.EOF", err)
	}
	if code, _ := s1.closed(t); code != websocket.StatusNormalClosure {
		t.Errorf("the drained socket closed with %d; want 1000", code)
	}
	if got := p.upgrades.Load(); got != 2 {
		t.Errorf("%d upgrades; want 2", got)
	}
}

// TestMuxStreamIDs checks that ids increase and that a socket out of ids
// hands new streams to a new one.
func TestMuxStreamIDs(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t, client.WithFirstStreamID(muxwire.MaxStreamID-1))
	ctx := testContext(t)
	a := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	b := rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	s1 := p.accept(t)
	s1.expect(t, muxwire.TypeOpen, muxwire.MaxStreamID-1)
	s1.expect(t, muxwire.TypeOpen, muxwire.MaxStreamID)
	rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	s2 := p.accept(t)
	s2.expect(t, muxwire.TypeOpen, muxwire.MaxStreamID-1)
	s1.send(t, endFrame(t, muxwire.MaxStreamID-1, status.New(codes.OK, ""), nil), endFrame(t, muxwire.MaxStreamID, status.New(codes.OK, ""), nil))
	for _, cs := range []grpc.ClientStream{a, b} {
		var m []byte
		if err := cs.RecvMsg(&m); !errors.Is(err, io.EOF) {
			t.Errorf("RecvMsg = %v; want io.EOF", err)
		}
	}
	if code, _ := s1.closed(t); code != websocket.StatusNormalClosure {
		t.Errorf("the socket out of ids closed with %d; want 1000", code)
	}
}

// TestMuxMaxStreams checks that a stream over the bridge's
// MAX_CONCURRENT_STREAMS waits for one to end, as gRPC's do.
func TestMuxMaxStreams(t *testing.T) {
	t.Parallel()
	settings := muxwire.DefaultSettings()
	settings.MaxStreams = 1
	p := newPeer(t, settings)
	conn := p.client(t)
	a := rawStream(t, testContext(t), conn, bidiDesc, bidiMethod)
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)

	short, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
	defer cancel()
	if _, err := conn.NewStream(short, bidiDesc, bidiMethod); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("NewStream over the limit = %v; want DEADLINE_EXCEEDED", err)
	}
	opened := make(chan error, 1)
	go func() {
		_, err := conn.NewStream(testContext(t), bidiDesc, bidiMethod)
		opened <- err
	}()
	s.none(t, 100*time.Millisecond)
	s.send(t, endFrame(t, 1, status.New(codes.OK, ""), nil))
	if err := await(t, opened); err != nil {
		t.Fatal(err)
	}
	s.expect(t, muxwire.TypeOpen, 2)
	var m []byte
	if err := a.RecvMsg(&m); !errors.Is(err, io.EOF) {
		t.Errorf("RecvMsg = %v; want io.EOF", err)
	}
}

// TestMuxToken checks the token in the handshake and the TOKEN frames of
// SetToken, ahead of the streams opened after it.
func TestMuxToken(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t, client.WithToken("t1"))
	ctx := testContext(t)
	rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	s := p.accept(t)
	if want := []string{muxwire.Subprotocol, v1wire.TokenEntry("t1")}; strings.Join(s.offer, ", ") != strings.Join(want, ", ") {
		t.Errorf("offered %q; want %q", s.offer, want)
	}
	s.expect(t, muxwire.TypeOpen, 1)
	if err := conn.SetToken("t2"); err != nil {
		t.Fatal(err)
	}
	rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	if f := s.expect(t, muxwire.TypeToken, 0); string(f.P) != "t2" {
		t.Errorf("TOKEN %q; want t2", f.P)
	}
	s.expect(t, muxwire.TypeOpen, 2)
	// A token the bridge would refuse is refused here, and sends nothing.
	if err := conn.SetToken("bad\ntoken"); err == nil || !strings.HasPrefix(err.Error(), "client: ") {
		t.Errorf("SetToken with a newline = %v; want an error from client", err)
	}
	if _, err := client.New(p.url, client.WithToken("é")); err == nil {
		t.Error("New with a token that is not ASCII succeeded")
	}
	if err := conn.SetToken(""); err != nil {
		t.Fatal(err)
	}
	if f := s.expect(t, muxwire.TypeToken, 0); len(f.P) != 0 {
		t.Errorf("TOKEN %q; want empty", f.P)
	}

	// A new socket carries the token of the moment in its handshake.
	if err := conn.SetToken("t3"); err != nil {
		t.Fatal(err)
	}
	s.expect(t, muxwire.TypeToken, 0)
	s.roundTrip(t, muxwire.AppendFrame(nil, muxwire.TypeGoAway, 0, 0, muxwire.GoAway(2, "")))
	rawStream(t, ctx, conn, bidiDesc, bidiMethod)
	s2 := p.accept(t)
	if want := []string{muxwire.Subprotocol, v1wire.TokenEntry("t3")}; strings.Join(s2.offer, ", ") != strings.Join(want, ", ") {
		t.Errorf("offered %q; want %q", s2.offer, want)
	}
	s2.expect(t, muxwire.TypeOpen, 1)
}

func TestMuxClose(t *testing.T) {
	t.Parallel()
	p := newPeer(t, muxwire.DefaultSettings())
	conn := p.client(t)
	cs := rawStream(t, testContext(t), conn, bidiDesc, bidiMethod)
	s := p.accept(t)
	s.expect(t, muxwire.TypeOpen, 1)
	conn.Close()
	var m []byte
	if err := cs.RecvMsg(&m); err == nil || status.Convert(err).Message() != "grpcws: client connection closed" || status.Code(err) != codes.Canceled {
		t.Errorf("RecvMsg after Close = %v; want CANCELLED: grpcws: client connection closed", err)
	}
	if code, _ := s.closed(t); code != websocket.StatusNormalClosure {
		t.Errorf("close %d; want 1000", code)
	}
	if _, err := conn.NewStream(testContext(t), bidiDesc, bidiMethod); status.Code(err) != codes.Canceled {
		t.Errorf("NewStream after Close = %v; want CANCELLED", err)
	}
}
