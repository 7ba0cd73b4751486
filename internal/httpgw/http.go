package httpgw

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// preflight answers a CORS preflight from an allowed origin: POST and GET
// (Connect's GET for side-effect-free methods), any request header (the
// call's metadata), credentials, cached for two hours.
func preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Set("Access-Control-Allow-Methods", "POST, GET")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", req)
	}
	h.Set("Access-Control-Max-Age", "7200")
	h.Add("Vary", "Origin")
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
}

// corsWriter adds the CORS headers of an allowed cross-origin request to
// the response, and exposes every header the response carries (metadata,
// grpc-status, Connect's trailer-*), as the page's client must read them.
type corsWriter struct {
	http.ResponseWriter
	origin string
	done   bool
}

func (c *corsWriter) header() {
	if c.done {
		return
	}
	c.done = true
	h := c.ResponseWriter.Header()
	var expose []string
	for k := range h {
		switch strings.ToLower(k) {
		case "cache-control", "content-language", "content-length", "content-type", "expires", "last-modified", "pragma", "trailer":
			continue
		}
		if !strings.HasPrefix(k, http.TrailerPrefix) {
			expose = append(expose, k)
		}
	}
	for _, v := range h.Values("Trailer") {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				expose = append(expose, t)
			}
		}
	}
	slices.Sort(expose)
	h.Set("Access-Control-Allow-Origin", c.origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
	if len(expose) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(slices.Compact(expose), ", "))
	}
}

func (c *corsWriter) WriteHeader(code int) {
	c.header()
	c.ResponseWriter.WriteHeader(code)
}

func (c *corsWriter) Write(b []byte) (int, error) {
	c.header()
	return c.ResponseWriter.Write(b)
}

func (c *corsWriter) Flush() {
	c.header()
	http.NewResponseController(c.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher
}

func (c *corsWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// textRequest turns a grpc-web-text request, whose body is base64, into a
// binary gRPC-Web one for the transcoder.
func textRequest(r *http.Request) *http.Request {
	r = r.Clone(r.Context())
	ct := r.Header.Get("Content-Type")
	r.Header.Set("Content-Type", "application/grpc-web"+strings.TrimPrefix(strings.ToLower(ct), "application/grpc-web-text"))
	r.Body = struct {
		io.Reader
		io.Closer
	}{base64.NewDecoder(base64.StdEncoding, r.Body), r.Body}
	r.ContentLength = -1
	r.Header.Del("Content-Length")
	return r
}

// textResponse encodes a binary gRPC-Web response as grpc-web-text: each
// write in base64 of its own, padded, as grpcwebproxy did; the clients
// decode groups of four characters, padded or not, so a message is never
// held back waiting for the bytes that would complete a group.
type textResponse struct {
	http.ResponseWriter
	wrote bool
}

func textWriter(w http.ResponseWriter) *textResponse { return &textResponse{ResponseWriter: w} }

func (t *textResponse) WriteHeader(code int) {
	if !t.wrote {
		t.wrote = true
		h := t.ResponseWriter.Header()
		if ct := h.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc-web") {
			h.Set("Content-Type", "application/grpc-web-text"+strings.TrimPrefix(ct, "application/grpc-web"))
		}
		h.Del("Content-Length")
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *textResponse) Write(b []byte) (int, error) {
	if !t.wrote {
		t.WriteHeader(http.StatusOK)
	}
	if len(b) == 0 {
		return 0, nil
	}
	if _, err := io.WriteString(t.ResponseWriter, base64.StdEncoding.EncodeToString(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (t *textResponse) Flush() {
	http.NewResponseController(t.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher
}

func (t *textResponse) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// writeError answers a request that reaches no backend with st, in the
// request's protocol: a trailers-only response for gRPC and gRPC-Web, an
// error for Connect.
func writeError(w http.ResponseWriter, protocol string, st *status.Status) {
	h := w.Header()
	switch protocol {
	case "grpc", "grpc-web", "grpc-web-text":
		h.Set("Content-Type", "application/"+protocol+"+proto")
		h.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
		h.Set("Grpc-Message", percentEncode(st.Message()))
		w.WriteHeader(http.StatusOK)
	case "connect-streaming":
		writeConnectStreamError(w, st)
	default:
		body, _ := json.Marshal(map[string]string{"code": connectCode(st.Code()), "message": st.Message()})
		h.Set("Content-Type", "application/json")
		w.WriteHeader(connectHTTPStatus(st.Code()))
		_, _ = w.Write(body)
	}
}

// writeConnectStreamError ends a Connect streaming response with st.
func writeConnectStreamError(w http.ResponseWriter, st *status.Status) {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": connectCode(st.Code()), "message": st.Message()}})
	frame := make([]byte, 5, 5+len(body))
	frame[0] = 0x02 // end of stream
	binary.BigEndian.PutUint32(frame[1:], uint32(len(body)))
	w.Header().Set("Content-Type", "application/connect+proto")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(frame, body...))
}

// percentEncode encodes a status message as gRPC does: bytes outside
// printable ASCII, and '%', as %XX.
func percentEncode(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c > '~' || c == '%' {
			b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// connectCode is the Connect protocol's name of a code.
func connectCode(c codes.Code) string {
	switch c {
	case codes.Canceled:
		return "canceled"
	case codes.InvalidArgument:
		return "invalid_argument"
	case codes.DeadlineExceeded:
		return "deadline_exceeded"
	case codes.NotFound:
		return "not_found"
	case codes.AlreadyExists:
		return "already_exists"
	case codes.PermissionDenied:
		return "permission_denied"
	case codes.ResourceExhausted:
		return "resource_exhausted"
	case codes.FailedPrecondition:
		return "failed_precondition"
	case codes.Aborted:
		return "aborted"
	case codes.OutOfRange:
		return "out_of_range"
	case codes.Unimplemented:
		return "unimplemented"
	case codes.Internal:
		return "internal"
	case codes.Unavailable:
		return "unavailable"
	case codes.DataLoss:
		return "data_loss"
	case codes.Unauthenticated:
		return "unauthenticated"
	}
	return "unknown"
}

// connectHTTPStatus is the HTTP status of a Connect unary error.
func connectHTTPStatus(c codes.Code) int {
	switch c {
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// trailerCase lower-cases the names in the trailers frames of a gRPC-Web
// response, as the gRPC-Web protocol asks: vanguard writes them in Go's
// canonical case, and Google's grpc-web client looks for "grpc-status"
// case-sensitively. Lower-casing keeps every length, so the frames pass
// through as they are written.
type trailerCase struct {
	http.ResponseWriter
	prefix  [5]byte
	n       int  // bytes of prefix seen
	left    int  // payload bytes left in the current frame
	trailer bool // the current frame holds trailers
	inName  bool // at a header name: lower-case until ':'
}

func (t *trailerCase) Write(b []byte) (int, error) {
	out := b
	copied := false
	for i := 0; i < len(b); {
		if t.left == 0 {
			t.prefix[t.n] = b[i]
			t.n++
			i++
			if t.n == 5 {
				t.n = 0
				t.left = int(binary.BigEndian.Uint32(t.prefix[1:]))
				t.trailer = t.prefix[0]&0x80 != 0
				t.inName = true
			}
			continue
		}
		n := min(t.left, len(b)-i)
		if t.trailer {
			for j := i; j < i+n; j++ {
				c := b[j]
				switch {
				case c == '\n':
					t.inName = true
				case !t.inName:
				case c == ':':
					t.inName = false
				case 'A' <= c && c <= 'Z':
					if !copied {
						out, copied = slices.Clone(b), true
					}
					out[j] = c + ('a' - 'A')
				}
			}
		}
		t.left -= n
		i += n
	}
	return t.ResponseWriter.Write(out)
}

func (t *trailerCase) Flush() {
	http.NewResponseController(t.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher
}

func (t *trailerCase) Unwrap() http.ResponseWriter { return t.ResponseWriter }
