package httpgw

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/passthrough"
)

// A call is one RPC under way, for Close.
type call struct {
	cancel context.CancelCauseFunc
}

// serveBackend serves the gRPC request that vanguard makes of each call:
// it forwards the call to the route's backend, message by message, without
// decoding them. It speaks the gRPC protocol itself rather than through a
// grpc.Server, so that the call's status is the gateway's to decide:
// grpc.Server fails a call on its own, with UNAVAILABLE or INTERNAL, as
// soon as reading the request fails, whatever the reason.
func (g *Gateway) serveBackend(w http.ResponseWriter, r *http.Request) {
	info, _ := r.Context().Value(infoKey{}).(*requestInfo)
	rt := g.routes[r.URL.Path]
	if info == nil || rt == nil { // vanguard calls only for the routes' methods
		g.unknown(w, r)
		return
	}
	s := &httpStream{w: w, body: r.Body, info: info, route: rt, types: g.types,
		json: strings.HasSuffix(r.Header.Get("Content-Type"), "+json")}
	md, timeout, err := g.requestMetadata(r.Header, info)
	if err == nil {
		err = s.compression(r.Header.Get("Grpc-Encoding"))
	}
	if err != nil {
		g.observer.Refused(bridge.RefusedBadRequest)
		st := status.New(codes.InvalidArgument, err.Error())
		g.logCall(info, rt, st, 0, &callStats{})
		s.end(st, nil)
		return
	}
	if rt.maxLife > 0 && (timeout == 0 || rt.maxLife < timeout) {
		timeout = rt.maxLife
	}

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	if timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, timeout)
		defer stop()
	}
	c := &call{cancel: cancel}
	g.mu.Lock()
	g.calls[c] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.calls, c)
		g.mu.Unlock()
	}()

	start := time.Now()
	obs := g.observer.Accepted(rt.Route)
	var stats callStats
	err = g.pump(metadata.NewOutgoingContext(ctx, md), cancel, s, rt, obs, &stats)
	st := g.callStatus(ctx, info, err)
	d := time.Since(start)
	obs.Ended(st.Code(), d)
	g.logCall(info, rt, st, d, &stats)
	s.end(st, s.trailer)
}

// callStatus is the status a call ends with, given what pump returned:
// the bridge's own reason when it ended the call (shutdown, a client too
// slow, a broken request) and the backend's status otherwise.
func (g *Gateway) callStatus(ctx context.Context, info *requestInfo, err error) *status.Status {
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errClosed):
		return errShuttingDown
	case info.writer.stalled.Load():
		return status.Newf(codes.Unavailable, "grpcws: client took no data for %v", g.writeTimeout)
	case err == nil:
		return status.New(codes.OK, "")
	case cause != nil && cause != context.Canceled && cause != context.DeadlineExceeded:
		if st, ok := status.FromError(cause); ok {
			return st // the client's side failed first, and cancelled the backend
		}
	}
	return status.Convert(err)
}

type callStats struct {
	mu                sync.Mutex
	msgsIn, bytesIn   int64
	msgsOut, bytesOut int64
}

// pump runs the call: the client's messages up to the backend, the
// backend's headers, messages and trailers down. When the client streams,
// its messages go up from a goroutine of its own, which pump waits for.
// Otherwise the one request message and the end of the request are read
// before the backend stream opens, so that a malformed request never
// reaches the backend.
func (g *Gateway) pump(ctx context.Context, cancel context.CancelCauseFunc, s *httpStream, rt *route, obs interface {
	ClientMessage(int)
	ServerMessage(int)
}, stats *callStats) error {
	var req mem.BufferSlice
	if !rt.ClientStreams {
		var err error
		if req, err = s.recvOne(); err != nil {
			return err
		}
	}
	cs, err := rt.conn.NewStream(ctx, rt.desc, rt.Method,
		grpc.ForceCodecV2(rawCodec{}),
		grpc.MaxCallRecvMsgSize(rt.maxMsg),
		grpc.MaxCallSendMsgSize(rt.maxMsg))
	if err != nil {
		req.Free()
		return err
	}
	// send reports false when the RPC has ended: RecvMsg below returns its
	// status.
	send := func(data mem.BufferSlice) bool {
		n := data.Len()
		stats.mu.Lock()
		stats.msgsIn++
		stats.bytesIn += int64(n)
		stats.mu.Unlock()
		obs.ClientMessage(n)
		f := frame{Data: data}
		if err := cs.SendMsg(&f); err != nil {
			f.Data.Free() // not taken
			return false
		}
		return true
	}
	if rt.ClientStreams {
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				data, err := s.recv()
				if err != nil {
					if errors.Is(err, io.EOF) {
						_ = cs.CloseSend()
					} else {
						cancel(err) // ends the backend stream, and so the loop below
					}
					return
				}
				if !send(data) {
					return
				}
			}
		})
		defer func() {
			cancel(nil) // a send blocked on the backend returns
			s.info.body.abort()
			wg.Wait()
		}()
	} else {
		send(req) // and CloseSend, as the method takes one message
	}

	if md, err := cs.Header(); err == nil && md != nil {
		s.sendHeader(md)
	}
	for {
		var f frame
		if err := cs.RecvMsg(&f); err != nil {
			s.trailer = cs.Trailer()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := f.Data.Len()
		werr := s.send(f.Data)
		f.Data.Free()
		if werr != nil {
			if _, ok := status.FromError(werr); ok {
				return werr
			}
			return status.Errorf(codes.Canceled, "grpcws: client connection lost: %v", werr)
		}
		stats.mu.Lock()
		stats.msgsOut++
		stats.bytesOut += int64(n)
		stats.mu.Unlock()
		obs.ServerMessage(n)
	}
}

// An httpStream is the client's side of one call in the gRPC protocol that
// vanguard speaks to the gateway: length-prefixed messages in the request
// body; headers, length-prefixed messages and trailers in the response.
// Vanguard decompresses every message before it arrives, and compresses
// none of ours. recv is called by one goroutine, and the rest by another.
type httpStream struct {
	w       http.ResponseWriter
	body    io.Reader
	info    *requestInfo
	route   *route
	types   *dynamicpb.Types
	json    bool        // messages are JSON both ways
	gzip    bool        // compressed request messages are gzip
	in, out [5]byte     // message prefixes
	started bool        // the response headers are written
	trailer metadata.MD // the backend's trailers
}

// compression takes the request's grpc-encoding.
func (s *httpStream) compression(enc string) error {
	switch enc {
	case "", "identity":
	case "gzip":
		s.gzip = true
	default: // vanguard refuses others first
		return fmt.Errorf("grpcws: request compression %q is not supported", enc)
	}
	return nil
}

// Errors of the request's messages.
var (
	errNoRequest    = status.Error(codes.InvalidArgument, "grpcws: no request message: the method takes exactly one")
	errManyRequests = status.Error(codes.InvalidArgument, "grpcws: more than one request message: the method takes exactly one")
	errTruncated    = status.Error(codes.InvalidArgument, "grpcws: the request ended inside a message")
)

// recv reads the next request message into a buffer from gRPC's pool. It
// returns io.EOF at the end of the request, and a status otherwise.
func (s *httpStream) recv() (mem.BufferSlice, error) {
	if _, err := io.ReadFull(s.body, s.in[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, s.readError(err)
	}
	compressed := s.in[0]&1 != 0
	if compressed && !s.gzip {
		return nil, status.Error(codes.InvalidArgument, "grpcws: a message flagged compressed in a request that names no compression")
	}
	n := int(binary.BigEndian.Uint32(s.in[1:]))
	if n > s.route.maxMsg {
		return nil, status.Errorf(codes.ResourceExhausted, "grpcws: request message larger than %d bytes", s.route.maxMsg)
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(n)
	if _, err := io.ReadFull(s.body, *buf); err != nil {
		pool.Put(buf)
		return nil, s.readError(err)
	}
	data := mem.BufferSlice{mem.NewBuffer(buf, pool)}
	var err error
	if compressed {
		if data, err = s.inflate(data); err != nil {
			return nil, err
		}
	}
	if s.json {
		return s.fromJSON(data)
	}
	return data, nil
}

// inflate decompresses a request message, at most the message size limit
// of it. It consumes data.
func (s *httpStream) inflate(data mem.BufferSlice) (mem.BufferSlice, error) {
	defer data.Free()
	d := gzipReaders.Get().(*boundedGzip)
	defer gzipReaders.Put(d)
	d.limit = int64(s.route.maxMsg)
	err := d.Reset(data.Reader())
	var out mem.BufferSlice
	if err == nil {
		out, err = mem.ReadAll(d, mem.DefaultBufferPool())
	}
	if err != nil {
		out.Free()
		if st := vanguardError(err); st != nil {
			return nil, st.Err()
		}
		return nil, status.Errorf(codes.InvalidArgument, "grpcws: compressed request message: %v", err)
	}
	return out, nil
}

var gzipReaders = sync.Pool{New: func() any { return new(boundedGzip) }}

// fromJSON turns a request message in JSON into the binary encoding. It
// consumes data.
func (s *httpStream) fromJSON(data mem.BufferSlice) (mem.BufferSlice, error) {
	b := data.Materialize()
	data.Free()
	m := s.route.input.New().Interface()
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: s.types}).Unmarshal(b, m); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "grpcws: request is not a valid %s in JSON: %v", m.ProtoReflect().Descriptor().FullName(), err)
	}
	out, err := proto.Marshal(m)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "grpcws: request: %v", err)
	}
	return mem.BufferSlice{mem.SliceBuffer(out)}, nil
}

// toJSON turns a message from the backend into JSON, with every field,
// as connect-go and vanguard write it.
func (s *httpStream) toJSON(data mem.BufferSlice) ([]byte, error) {
	m := s.route.output.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: s.types}).Unmarshal(data.Materialize(), m); err != nil {
		return nil, status.Errorf(codes.Internal, "grpcws: backend message: %v", err)
	}
	b, err := protojson.MarshalOptions{EmitUnpopulated: true, Resolver: s.types}.Marshal(m)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "grpcws: backend message: %v", err)
	}
	return b, nil
}

// recvOne reads the one message of a method that is not client-streaming,
// and the end of the request after it.
func (s *httpStream) recvOne() (mem.BufferSlice, error) {
	data, err := s.recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errNoRequest
		}
		return nil, err
	}
	switch extra, err := s.recv(); {
	case err == nil:
		extra.Free()
		data.Free()
		return nil, errManyRequests
	case !errors.Is(err, io.EOF):
		data.Free()
		return nil, err
	}
	return data, nil
}

// readError says why the request could not be read: what the client did
// wrong, as the body or vanguard found it, or that it went away.
func (s *httpStream) readError(err error) error {
	if f := s.info.body.failure(); f != nil {
		return f
	}
	if st := vanguardError(err); st != nil {
		return st.Err()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errTruncated
	}
	return status.Errorf(codes.Canceled, "grpcws: client connection lost: %v", err)
}

// sendHeader writes the response headers: the backend's headers as
// metadata.
func (s *httpStream) sendHeader(md metadata.MD) {
	h := s.w.Header()
	h.Set("Content-Type", s.contentType())
	addMetadata(h, "", md)
	s.w.WriteHeader(http.StatusOK)
	s.started = true
}

func (s *httpStream) contentType() string {
	if s.json {
		return "application/grpc+json"
	}
	return "application/grpc"
}

// send writes one message, and flushes it when the response is a stream.
func (s *httpStream) send(data mem.BufferSlice) error {
	if !s.started {
		s.sendHeader(nil)
	}
	if s.json {
		b, err := s.toJSON(data)
		if err != nil {
			return err
		}
		data = mem.BufferSlice{mem.SliceBuffer(b)}
	}
	binary.BigEndian.PutUint32(s.out[1:], uint32(data.Len()))
	if _, err := s.w.Write(s.out[:]); err != nil {
		return err
	}
	for _, b := range data {
		if _, err := s.w.Write(b.ReadOnlyData()); err != nil {
			return err
		}
	}
	if s.route.ServerStreams {
		return http.NewResponseController(s.w).Flush()
	}
	return nil
}

// end writes the final status and trailers: as trailers, or as the headers
// of a trailers-only response when no headers were written.
func (s *httpStream) end(st *status.Status, trailers metadata.MD) {
	if s.answered() {
		return
	}
	h := s.w.Header()
	prefix := http.TrailerPrefix
	if !s.started {
		h.Set("Content-Type", s.contentType())
		prefix = ""
	}
	for _, f := range grpcheader.Status(st) {
		h.Set(prefix+http.CanonicalHeaderKey(f[0]), f[1])
	}
	addMetadata(h, prefix, trailers)
	if !s.started {
		s.w.WriteHeader(http.StatusOK)
	}
}

// answered reports whether vanguard has ended the response on its own, as
// it does when it finds a request's envelope malformed or over the limit:
// before the stream's own headers, anything written below vanguard is its
// answer; after them, vanguard refuses further writes.
func (s *httpStream) answered() bool {
	if !s.started {
		return s.info.writer.began.Load()
	}
	_, err := s.w.Write(nil)
	return err != nil
}

// addMetadata adds the backend's metadata to h, each key after prefix;
// binary values in base64.
func addMetadata(h http.Header, prefix string, md metadata.MD) {
	for k, vs := range md {
		if grpcheader.Reserved(k) || k == "content-type" {
			continue
		}
		key := prefix + http.CanonicalHeaderKey(k)
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = grpcheader.EncodeBinary(v)
			}
			h[key] = append(h[key], v)
		}
	}
}

// hidden are request headers that describe the HTTP request, the
// browser or a protocol, not the call: they are not forwarded.
var hidden = map[string]bool{
	":authority": true, "host": true, "connection": true, "keep-alive": true, "proxy-connection": true,
	"proxy-authorization": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
	"content-type": true, "content-length": true, "content-encoding": true,
	"accept": true, "accept-encoding": true, "accept-language": true, "user-agent": true,
	"origin": true, "referer": true, "cookie": true, "cache-control": true, "pragma": true, "dnt": true,
	"priority": true, "forwarded": true, "x-grpc-web": true, "x-user-agent": true,
	"grpc-accept-encoding": true, "grpc-encoding": true,
}

// requestMetadata returns the metadata to send to the backend, from the
// request's headers, and the call's timeout from grpc-timeout (zero for
// none).
func (g *Gateway) requestMetadata(h http.Header, info *requestInfo) (metadata.MD, time.Duration, error) {
	md := metadata.MD{}
	var timeout time.Duration
	for name, vs := range h {
		k := strings.ToLower(name)
		switch {
		case k == grpcheader.TimeoutKey:
			d, err := grpcheader.ParseTimeout(vs[0])
			if err != nil {
				return nil, 0, err
			}
			timeout = d
			continue
		case g.headers[k]:
		case hidden[k], strings.HasPrefix(k, "sec-"), strings.HasPrefix(k, "x-forwarded-"),
			strings.HasPrefix(k, "connect-"), strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, "access-control-"):
			continue
		case k == "authorization", k == "traceparent", k == "tracestate":
		case g.allow != nil && !g.allow[k]:
			continue
		}
		for _, v := range vs {
			if err := grpcheader.Append(md, k, v); err != nil {
				return nil, 0, err
			}
		}
	}
	if c := g.cookies(info.cookie); c != "" {
		md.Set("cookie", c)
	}
	if g.opts.ForwardClientAddress && info.forwardedFor != "" {
		md.Set("x-forwarded-for", info.forwardedFor)
	}
	return md, timeout, nil
}

// cookies returns the Cookie header, or the cookies of it the operator
// forwards, or "".
func (g *Gateway) cookies(header string) string {
	if header == "" {
		return ""
	}
	if g.headers["cookie"] {
		return header
	}
	if len(g.opts.MetadataCookies) == 0 {
		return ""
	}
	r := http.Request{Header: http.Header{"Cookie": {header}}}
	var kept []string
	for _, c := range r.Cookies() {
		for _, name := range g.opts.MetadataCookies {
			if c.Name == name {
				kept = append(kept, c.Name+"="+c.Value)
			}
		}
	}
	return strings.Join(kept, "; ")
}

// logCall writes the access line of one call, as the bridge does for
// WebSocket connections.
func (g *Gateway) logCall(info *requestInfo, rt *route, st *status.Status, d time.Duration, stats *callStats) {
	level := slog.LevelDebug
	if g.opts.AccessLog {
		level = slog.LevelInfo
	}
	switch st.Code() {
	case codes.OK, codes.Canceled:
	default:
		level = max(level, slog.LevelInfo)
	}
	stats.mu.Lock()
	defer stats.mu.Unlock()
	attrs := []slog.Attr{
		slog.String("client", info.client.String()),
		slog.String("protocol", info.protocol),
		slog.String("route", rt.Method),
		slog.String("code", st.Code().String()),
		slog.Duration("duration", d),
		slog.Int64("msgs_in", stats.msgsIn),
		slog.Int64("msgs_out", stats.msgsOut),
		slog.Int64("bytes_in", stats.bytesIn),
		slog.Int64("bytes_out", stats.bytesOut),
	}
	if st.Code() != codes.OK {
		attrs = append(attrs, slog.String("cause", st.Message()))
	}
	g.log.LogAttrs(context.Background(), level, "grpcws: rpc", attrs...)
}

// rawCodec and frame pass messages through as bytes, both to the client (as
// the in-process server's codec) and to the backend.
type (
	rawCodec = passthrough.Codec
	frame    = passthrough.Frame
)
