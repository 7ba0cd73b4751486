package tlsfiles

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// testTimeout bounds every network operation of a test.
const testTimeout = 10 * time.Second

// A logRecorder is a slog handler that keeps the records it is given.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

// records returns the records at level, each as its message and its
// attributes formatted with %v.
func (h *logRecorder) records(level slog.Level) []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]string
	for _, r := range h.recs {
		if r.Level != level {
			continue
		}
		m := map[string]string{"msg": r.Message}
		r.Attrs(func(a slog.Attr) bool {
			m[a.Key] = fmt.Sprint(a.Value.Any())
			return true
		})
		out = append(out, m)
	}
	return out
}

func newLogger() (*slog.Logger, *logRecorder) {
	h := &logRecorder{}
	return slog.New(h), h
}

// serveHTTPS serves handler with c on 127.0.0.1, through
// http.Server.ServeTLS if serveTLS is set and through tls.NewListener
// otherwise, and returns the address. The server is shut down when the
// test ends.
func serveHTTPS(t *testing.T, c *tls.Config, serveTLS bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(handle),
		ReadHeaderTimeout: testTimeout,
		// The client certificate tests fail handshakes on purpose.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	if serveTLS {
		srv.TLSConfig = c
	}
	done := make(chan error, 1)
	go func() {
		if serveTLS {
			done <- srv.ServeTLS(lis, "", "")
		} else {
			done <- srv.Serve(tls.NewListener(lis, c))
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// handle answers "client=<common name>" with the client certificate's
// common name, empty without one, and echoes WebSocket messages on /ws.
func handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ws" {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), testTimeout)
		defer cancel()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	}
	var cn string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cn = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	fmt.Fprintf(w, "client=%s", cn)
}

// An httpsConn is one TLS connection that carries HTTP/1.1 requests one
// after another.
type httpsConn struct {
	*tls.Conn
	br *bufio.Reader
}

// dial makes a TLS connection to addr and completes the handshake.
func dial(t *testing.T, addr string, c *tls.Config) (*httpsConn, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: testTimeout}, Config: c}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := nc.(*tls.Conn)
	tc.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { tc.Close() })
	return &httpsConn{Conn: tc, br: bufio.NewReader(tc)}, nil
}

func mustDial(t *testing.T, addr string, c *tls.Config) *httpsConn {
	t.Helper()
	hc, err := dial(t, addr, c)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return hc
}

// get does a request on the connection and returns the body of a 200
// response.
func (hc *httpsConn) get() (string, error) {
	if _, err := io.WriteString(hc, "GET / HTTP/1.1\r\nHost: grpcws.test\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(hc.br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(body), nil
}

// serial returns the serial number of the server's certificate.
func (hc *httpsConn) serial() *big.Int {
	return hc.ConnectionState().PeerCertificates[0].SerialNumber
}

// serverSerial makes a new connection to addr and returns the serial
// number of the certificate the server presents.
func serverSerial(t *testing.T, addr string, c *tls.Config) *big.Int {
	t.Helper()
	hc := mustDial(t, addr, c)
	defer hc.Close()
	return hc.serial()
}

// fileSerial returns the serial number of the certificate in file.
func fileSerial(t *testing.T, certFile, keyFile string) *big.Int {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// replace writes data to path through a temporary file and a rename, as
// certificate tooling does.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// wantErrorNaming fails the test unless err is an error that mentions
// every one of names.
func wantErrorNaming(t *testing.T, err error, names ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one naming %s", strings.Join(names, ", "))
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
}
