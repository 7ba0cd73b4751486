package testpki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/grpcws/grpcws/internal/testpki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("%s: want exactly one CERTIFICATE block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestNew(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	if got, want := p.CAFile, filepath.Join(p.Dir, "ca.pem"); got != want {
		t.Errorf("CAFile = %q; want %q", got, want)
	}
	ca := readCert(t, p.CAFile)
	if !ca.IsCA {
		t.Error("ca.pem is not a CA certificate")
	}
	if _, err := ca.Verify(x509.VerifyOptions{Roots: p.CertPool}); err != nil {
		t.Errorf("the CA does not verify against CertPool: %v", err)
	}
	now := time.Now()
	if ca.NotBefore.After(now) || ca.NotAfter.Before(now.Add(50*time.Minute)) {
		t.Errorf("CA valid from %v to %v; want about now-1m to now+1h", ca.NotBefore, ca.NotAfter)
	}
	// Two CAs are distinct: one does not trust the other's certificates.
	other := testpki.New(t)
	if _, err := readCert(t, other.CAFile).Verify(x509.VerifyOptions{Roots: p.CertPool}); err == nil {
		t.Error("a second CA verifies against the first one's pool")
	}
}

func TestServer(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	tests := []struct {
		name  string
		hosts []string
		want  []string // names it must verify for
	}{
		{name: "ip", hosts: []string{"127.0.0.1"}, want: []string{"127.0.0.1"}},
		{name: "dns and ip", hosts: []string{"localhost", "127.0.0.1"}, want: []string{"localhost", "127.0.0.1"}},
		{name: "default", want: []string{"localhost", "127.0.0.1", "::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile := p.Server(t, tt.name, tt.hosts...)
			if got, want := certFile, filepath.Join(p.Dir, tt.name+".pem"); got != want {
				t.Errorf("certFile = %q; want %q", got, want)
			}
			if got, want := keyFile, filepath.Join(p.Dir, tt.name+"-key.pem"); got != want {
				t.Errorf("keyFile = %q; want %q", got, want)
			}
			if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
				t.Error(err)
			}
			cert := readCert(t, certFile)
			for _, host := range tt.want {
				_, err := cert.Verify(x509.VerifyOptions{
					Roots:     p.CertPool,
					DNSName:   host,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				})
				if err != nil {
					t.Errorf("verify for %s: %v", host, err)
				}
			}
			if err := cert.VerifyHostname("example.com"); err == nil {
				t.Error("the certificate is valid for example.com")
			}
			fi, err := os.Stat(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("key file mode %v; want 0600", got)
			}
		})
	}
}

func TestClient(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	certFile, keyFile := p.Client(t, "browser", "alice")
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	cert := readCert(t, certFile)
	if got, want := cert.Subject.CommonName, "alice"; got != want {
		t.Errorf("common name %q; want %q", got, want)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.CertPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify as a client certificate: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.CertPool}); err == nil {
		t.Error("a client certificate verifies for server auth")
	}
}

// TestRotate re-issues a certificate under the same name: the files are
// replaced, the serial is new, and no temporary files are left behind.
func TestRotate(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	certFile, keyFile := p.Server(t, "bridge", "127.0.0.1")
	seen := map[string]bool{readCert(t, p.CAFile).SerialNumber.String(): true}
	first := readCert(t, certFile).SerialNumber
	seen[first.String()] = true
	for range 20 {
		serial := p.Rotate(t, "bridge", "127.0.0.1")
		if seen[serial.String()] {
			t.Fatalf("serial %v issued twice", serial)
		}
		seen[serial.String()] = true
		if got := readCert(t, certFile).SerialNumber; got.Cmp(serial) != 0 {
			t.Fatalf("%s holds serial %v; want %v", certFile, got, serial)
		}
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			t.Fatalf("after rotation: %v", err)
		}
	}
	entries, err := os.ReadDir(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got, want := strings.Join(names, " "), "bridge-key.pem bridge.pem ca.pem"; got != want {
		t.Errorf("files in Dir: %s; want %s", got, want)
	}
}

// TestTLSConfigs does a mutual TLS handshake between ServerTLS and
// ClientTLS, and checks that ServerTLS refuses a client without a
// certificate.
func TestTLSConfigs(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	tests := []struct {
		name    string
		client  *tls.Config
		wantErr bool
	}{
		{name: "client certificate", client: p.ClientTLS(t, "client", "alice")},
		{name: "no client certificate", client: &tls.Config{RootCAs: p.CertPool}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server := p.ServerTLS(t, "server", "localhost")
			client := tt.client.Clone()
			client.ServerName = "localhost"
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cc, sc := net.Pipe()
			errc := make(chan error, 1)
			var peer string
			go func() {
				// Close the pipes, not the TLS connections: close_notify
				// would block on a pipe nobody reads.
				defer sc.Close()
				s := tls.Server(sc, server)
				err := s.HandshakeContext(ctx)
				if err == nil {
					peer = s.ConnectionState().PeerCertificates[0].Subject.CommonName
				}
				errc <- err
			}()
			c := tls.Client(cc, client)
			// In TLS 1.3 the client finishes before the server has checked
			// its certificate: the server's verdict is what counts.
			cerr := c.HandshakeContext(ctx)
			cc.Close()
			err := <-errc
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("server handshake: %v; want an error about the missing certificate", err)
				}
				return
			}
			if cerr != nil || err != nil {
				t.Fatalf("handshake: client %v, server %v", cerr, err)
			}
			if peer != "alice" {
				t.Errorf("server saw client %q; want alice", peer)
			}
		})
	}
}

// TestTLSConfigsUntrusted checks that the configurations trust only their
// own CA.
func TestTLSConfigsUntrusted(t *testing.T) {
	t.Parallel()
	p, other := testpki.New(t), testpki.New(t)
	server := p.ServerTLS(t, "server", "localhost")
	client := other.ClientTLS(t, "client", "mallory")
	client.ServerName = "localhost"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cc, sc := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer sc.Close()
		tls.Server(sc, server).HandshakeContext(ctx)
	}()
	c := tls.Client(cc, client)
	err := c.HandshakeContext(ctx)
	cc.Close()
	<-done
	if uerr := (x509.UnknownAuthorityError{}); !errors.As(err, &uerr) {
		t.Errorf("handshake with another CA's server: %v; want an unknown authority error", err)
	}
}
