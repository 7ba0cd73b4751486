// Package tlsfiles makes TLS configurations from PEM files and re-reads the
// files when they change, so that a certificate can be renewed (by
// cert-manager, a Kubernetes secret update, or a cron job) without a
// restart.
//
// # Reloading
//
// The files are checked on handshakes, at most once a second, with no
// goroutine of their own: a configuration that is not used does no work. A
// file counts as changed when its modification time, its size or the file
// itself (a rename or a symbolic link pointing elsewhere) changes, as
// internal/filestamp tells. When a change is seen every file is read
// again. If they load, the new certificate serves every handshake from then
// on; connections already open keep the certificate they were made with.
// If they do not load (a file is missing, corrupt, or the key does not
// match the certificate), the error is logged, the previous certificate
// stays in use, and the files are tried again at their next change.
//
// Replace files by writing a temporary file and renaming it over the old
// one. A certificate and its key cannot be replaced together; a handshake
// that falls between the two renames logs a mismatch and keeps the
// previous pair until the second rename is seen.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/grpcws/grpcws/internal/filestamp"
)

// nextProtos is what a server offers in ALPN.
var nextProtos = []string{"h2", "http/1.1"}

// checkInterval is the least time between two checks of the files. Tests
// shorten it.
var checkInterval = time.Second

// ServerOptions configure Server.
type ServerOptions struct {
	// CertFile and KeyFile hold the server's certificate (followed by any
	// intermediates) and its private key, in PEM. Both are required.
	CertFile, KeyFile string
	// ClientCAFile holds the CA certificates that client certificates are
	// verified against, in PEM. Empty: no client certificate is requested,
	// whatever ClientAuth says.
	ClientCAFile string
	// ClientAuth is used when ClientCAFile is set. It is
	// tls.RequireAndVerifyClientCert or tls.VerifyClientCertIfGiven; zero
	// (tls.NoClientCert) means tls.RequireAndVerifyClientCert, since a
	// client CA that verifies nothing is a mistake. The modes that do not
	// verify are refused.
	ClientAuth tls.ClientAuthType
	// MinVersion is the lowest TLS version accepted. Zero: TLS 1.2.
	MinVersion uint16
	// Logger receives the outcome of every reload: Info when a new
	// certificate is in use, Error when changed files cannot be loaded.
	// Nil: slog.Default().
	Logger *slog.Logger
}

// Server loads the server's certificate, its key and the client CAs now,
// and returns a configuration for a TLS server that re-reads them when they
// change (see Reloading in the package documentation). The error names the
// file that could not be loaded.
//
// The configuration offers HTTP/2 and HTTP/1.1 in ALPN, in that order.
// Clients that open WebSockets offer HTTP/1.1 alone for them (browsers,
// net/http, Node's https), so their upgrades arrive over HTTP/1.1, while
// gRPC clients and browsers' fetch get HTTP/2. It works with
// tls.NewListener, and with http.Server.ServeTLS given empty file names.
// The configuration is safe for concurrent handshakes; do not modify it
// once in use.
func Server(opts ServerOptions) (*tls.Config, error) {
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, errors.New("tlsfiles: a certificate file and a key file are both required")
	}
	auth := tls.NoClientCert
	if opts.ClientCAFile != "" {
		switch opts.ClientAuth {
		case tls.NoClientCert:
			auth = tls.RequireAndVerifyClientCert
		case tls.RequireAndVerifyClientCert, tls.VerifyClientCertIfGiven:
			auth = opts.ClientAuth
		default:
			return nil, fmt.Errorf("tlsfiles: client auth %v does not verify client certificates against the client CA file", opts.ClientAuth)
		}
	}
	minVersion := opts.MinVersion
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	files := []string{opts.CertFile, opts.KeyFile}
	if opts.ClientCAFile != "" {
		files = append(files, opts.ClientCAFile)
	}
	load := func() (*tls.Config, error) {
		cert, err := loadPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, err
		}
		c := &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientAuth:   auth,
			MinVersion:   minVersion,
			NextProtos:   nextProtos,
		}
		if opts.ClientCAFile != "" {
			if c.ClientCAs, err = loadPool(opts.ClientCAFile); err != nil {
				return nil, err
			}
		}
		return c, nil
	}
	loaded := func(c *tls.Config) []any { return certAttrs(&c.Certificates[0]) }
	r, err := newReloader(files, load, loaded, opts.Logger)
	if err != nil {
		return nil, err
	}
	// The configuration of each handshake is the current one of r: it
	// holds the certificate and client CAs together, and its NextProtos
	// rather than this one's are what the client is offered.
	return &tls.Config{
		MinVersion: minVersion,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.get(), nil
		},
	}, nil
}

// ClientOptions configure Client.
type ClientOptions struct {
	// CAFile holds the CA certificates that the server's certificate is
	// verified against, in PEM. It is read once. Empty: the system roots.
	CAFile string
	// CertFile and KeyFile hold a client certificate and its key, in PEM,
	// for mutual TLS. Both or neither. They are re-read when they change.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate is verified for.
	// Empty: the host of the address dialled.
	ServerName string
	// InsecureSkipVerify accepts any server certificate. For tests only.
	InsecureSkipVerify bool
	// Logger receives the outcome of every reload of the client
	// certificate, as for ServerOptions.Logger. Nil: slog.Default().
	Logger *slog.Logger
}

// Client loads the CA file and the client certificate now and returns a
// configuration for dialling a backend, with TLS 1.2 or later. The client
// certificate is re-read when its files change (see Reloading in the
// package documentation); the CA file is not. The error names the file
// that could not be loaded.
//
// The configuration is safe for concurrent handshakes; do not modify it
// once in use. It sets no NextProtos: gRPC adds "h2".
func Client(opts ClientOptions) (*tls.Config, error) {
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("tlsfiles: a client certificate needs both a certificate file and a key file")
	}
	c := &tls.Config{
		ServerName:         opts.ServerName,
		InsecureSkipVerify: opts.InsecureSkipVerify,
		MinVersion:         tls.VersionTLS12,
	}
	if opts.CAFile != "" {
		pool, err := loadPool(opts.CAFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if opts.CertFile != "" {
		load := func() (*tls.Certificate, error) {
			cert, err := loadPair(opts.CertFile, opts.KeyFile)
			return &cert, err
		}
		r, err := newReloader([]string{opts.CertFile, opts.KeyFile}, load, certAttrs, opts.Logger)
		if err != nil {
			return nil, err
		}
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.get(), nil
		}
	}
	return c, nil
}

// loadPair reads a certificate and its key.
func loadPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsfiles: certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsfiles: key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tlsfiles: certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// loadPool reads a file of CA certificates.
func loadPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tlsfiles: CA file %s: no PEM certificates found", file)
	}
	return pool, nil
}

// certAttrs describes a certificate in the log.
func certAttrs(c *tls.Certificate) []any {
	if c.Leaf == nil { // X509KeyPair sets it
		return nil
	}
	return []any{
		slog.String("subject", c.Leaf.Subject.String()),
		slog.String("serial", c.Leaf.SerialNumber.Text(16)),
		slog.Time("not_after", c.Leaf.NotAfter),
	}
}

// A reloader holds a value loaded from files and loads it again when the
// files change. It is safe for concurrent use.
type reloader[T any] struct {
	files []string
	load  func() (T, error)
	attrs func(T) []any // describe a new value in the log
	log   *slog.Logger
	every time.Duration

	mu   sync.Mutex      // guards the fields below
	next time.Time       // no check before then
	seen filestamp.Stamp // the files as last loaded or tried
	cur  T
}

func newReloader[T any](files []string, load func() (T, error), attrs func(T) []any, log *slog.Logger) (*reloader[T], error) {
	if log == nil {
		log = slog.Default()
	}
	// Stat before loading, so that a change during the load is seen at
	// the next check rather than lost.
	seen := filestamp.Take(files)
	v, err := load()
	if err != nil {
		return nil, err
	}
	return &reloader[T]{
		files: files,
		load:  load,
		attrs: attrs,
		log:   log,
		every: checkInterval,
		next:  time.Now().Add(checkInterval),
		seen:  seen,
		cur:   v,
	}, nil
}

// get returns the current value, first loading it again if a check is due
// and the files have changed.
func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Before(r.next) {
		return r.cur
	}
	r.next = now.Add(r.every)
	seen := filestamp.Take(r.files)
	var changed []string
	for _, i := range seen.Changed(r.seen) {
		changed = append(changed, r.files[i])
	}
	if len(changed) == 0 {
		return r.cur
	}
	r.seen = seen
	v, err := r.load()
	if err != nil {
		r.log.Error("grpcws: tls files changed but cannot be loaded; keeping the previous certificate",
			slog.Any("files", changed), slog.Any("error", err))
		return r.cur
	}
	r.cur = v
	r.log.Info("grpcws: tls certificate reloaded", append([]any{slog.Any("files", changed)}, r.attrs(v)...)...)
	return v
}
