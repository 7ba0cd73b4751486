package httpgw

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/passthrough"
)

// A call is one RPC under way, for Close.
type call struct {
	cancel context.CancelCauseFunc
}

// forward is the in-process gRPC server's handler for every method: it
// forwards the call to the route's backend, message by message, without
// decoding them.
func (g *Gateway) forward(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	rt := g.routes[method]
	if rt == nil {
		g.observer.Refused(bridge.RefusedUnknownRoute)
		return status.Errorf(codes.Unimplemented, "grpcws: no route for %s", method)
	}
	info, _ := ss.Context().Value(infoKey{}).(*requestInfo)
	if info == nil {
		info = &requestInfo{protocol: "grpc"}
	}
	in, _ := metadata.FromIncomingContext(ss.Context())
	md := g.outgoing(in, info)

	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	if rt.maxLife > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, rt.maxLife)
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
	err := g.pump(metadata.NewOutgoingContext(ctx, md), cancel, ss, rt, obs, &stats)
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errClosed):
		err = errShuttingDown.Err()
	case err != nil && cause != nil && cause != context.Canceled:
		if _, ok := status.FromError(cause); ok {
			err = cause // the client's side failed first, and cancelled the backend
		}
	}
	st := status.Convert(err)
	if err == nil {
		st = status.New(codes.OK, "")
	}
	d := time.Since(start)
	obs.Ended(st.Code(), d)
	g.logCall(info, rt, st, d, &stats)
	if err != nil {
		return st.Err()
	}
	return nil
}

type callStats struct {
	mu                sync.Mutex
	msgsIn, bytesIn   int64
	msgsOut, bytesOut int64
}

// pump runs the call: the client's messages up to the backend, the
// backend's headers, messages and trailers down. When the client streams,
// its messages go up from a goroutine of its own, which ends at the
// client's end of stream, or when the gRPC server ends the stream after
// pump returns.
func (g *Gateway) pump(ctx context.Context, cancel context.CancelCauseFunc, ss grpc.ServerStream, rt *route, obs interface {
	ClientMessage(int)
	ServerMessage(int)
}, stats *callStats) error {
	cs, err := rt.conn.NewStream(ctx, rt.desc, rt.Method,
		grpc.ForceCodecV2(rawCodec{}),
		grpc.MaxCallRecvMsgSize(rt.maxMsg),
		grpc.MaxCallSendMsgSize(rt.maxMsg))
	if err != nil {
		return err
	}
	up := func() error {
		for {
			var f frame
			if err := ss.RecvMsg(&f); err != nil {
				if errors.Is(err, io.EOF) {
					return cs.CloseSend()
				}
				return err
			}
			n := f.Data.Len()
			stats.mu.Lock()
			stats.msgsIn++
			stats.bytesIn += int64(n)
			stats.mu.Unlock()
			obs.ClientMessage(n)
			if err := cs.SendMsg(&f); err != nil {
				if f.Data != nil {
					f.Data.Free()
				}
				return nil // the RPC ended: RecvMsg below returns its status
			}
		}
	}
	if rt.ClientStreams {
		go func() {
			if err := up(); err != nil {
				cancel(err) // ends the backend stream, and so the loop below
			}
		}()
	} else if err := up(); err != nil {
		return err
	}

	if md, err := cs.Header(); err == nil && md != nil {
		delete(md, "content-type")
		if err := ss.SendHeader(md); err != nil {
			return err
		}
	}
	for {
		var f frame
		if err := cs.RecvMsg(&f); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := f.Data.Len()
		serr := ss.SendMsg(&f)
		if f.Data != nil {
			f.Data.Free()
		}
		if serr != nil {
			return serr
		}
		stats.mu.Lock()
		stats.msgsOut++
		stats.bytesOut += int64(n)
		stats.mu.Unlock()
		obs.ServerMessage(n)
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

// outgoing returns the metadata to send to the backend for the request
// metadata in.
func (g *Gateway) outgoing(in metadata.MD, info *requestInfo) metadata.MD {
	md := metadata.MD{}
	for k, vs := range in {
		switch {
		case g.headers[k]:
		case hidden[k], strings.HasPrefix(k, "sec-"), strings.HasPrefix(k, "x-forwarded-"),
			strings.HasPrefix(k, "connect-"), strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, "access-control-"):
			continue
		case k == "authorization", k == "traceparent", k == "tracestate":
		case g.allow != nil && !g.allow[k]:
			continue
		}
		md[k] = append(md[k], vs...)
	}
	if c := g.cookies(info.cookie); c != "" {
		md.Set("cookie", c)
	}
	if g.opts.ForwardClientAddress && info.forwardedFor != "" {
		md.Set("x-forwarded-for", info.forwardedFor)
	}
	return md
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
