// Package testpki is a certificate authority for tests. It issues server
// and client certificates, writes them as PEM files in the test's temporary
// directory, and re-issues them in place so that tests can exercise
// certificate reloading.
//
// Keys are ECDSA P-256. Every certificate is valid from a minute before the
// CA was made until an hour after, which is enough for any test and short
// enough that nothing it writes is worth keeping.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A PKI is a test certificate authority with its files in a directory.
//
// Its methods are safe for concurrent use, except that issuing two
// certificates under one name at once leaves a certificate file and a key
// file that may not match. They report failures with t.Fatal, so they must
// be called from the goroutine running the test.
type PKI struct {
	// Dir is the directory that holds the files: ca.pem, and <name>.pem
	// and <name>-key.pem for every certificate issued.
	Dir string
	// CAFile is the CA certificate's PEM file.
	CAFile string
	// CertPool holds the CA certificate, for RootCAs or ClientCAs.
	CertPool *x509.CertPool

	ca  *x509.Certificate
	key *ecdsa.PrivateKey

	mu      sync.Mutex
	serials map[string]bool // every serial issued, in hex, to keep them distinct
}

// New makes a CA and writes its certificate to ca.pem in a new directory
// under t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), serials: make(map[string]bool)}
	p.CAFile = filepath.Join(p.Dir, "ca.pem")
	p.key = newKey(t)
	now := time.Now()
	serial := p.newSerial(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"grpcws tests"}, CommonName: "grpcws test CA " + serial.Text(16)},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.key.PublicKey, p.key)
	if err != nil {
		t.Fatalf("testpki: create the CA certificate: %v", err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatalf("testpki: parse the CA certificate: %v", err)
	}
	p.CertPool = x509.NewCertPool()
	p.CertPool.AddCert(p.ca)
	writeFile(t, p.CAFile, pemBlock("CERTIFICATE", der), 0o644)
	return p
}

// Server issues a server certificate for hosts, DNS names or IP addresses
// such as "localhost" and "127.0.0.1", and writes it to <name>.pem and its
// key to <name>-key.pem in Dir. With no hosts the certificate is for
// "localhost", "127.0.0.1" and "::1". Issuing again under the same name
// replaces both files, each with a rename, so a reader sees either the old
// file or the new one, never a partial one.
func (p *PKI) Server(t testing.TB, name string, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _ = p.issue(t, name, serverTemplate(hosts))
	return certFile, keyFile
}

// Rotate re-issues the server certificate called name, as Server does, and
// returns the new certificate's serial number, which differs from that of
// every certificate issued before by p.
func (p *PKI) Rotate(t testing.TB, name string, hosts ...string) *big.Int {
	t.Helper()
	_, _, cert := p.issue(t, name, serverTemplate(hosts))
	return cert.SerialNumber
}

// Client issues a client certificate (extended key usage client auth)
// whose subject common name is cn, and writes it to <name>.pem and its key
// to <name>-key.pem in Dir, replacing them as Server does.
func (p *PKI) Client(t testing.TB, name, cn string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, _ = p.issue(t, name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return certFile, keyFile
}

// ServerTLS issues a server certificate as Server does and returns a new
// configuration for an in-process TLS server that presents it and requires
// a client certificate issued by p (mutual TLS). Set ClientAuth on the
// result to relax that.
func (p *PKI) ServerTLS(t testing.TB, name string, hosts ...string) *tls.Config {
	t.Helper()
	certFile, keyFile := p.Server(t, name, hosts...)
	return &tls.Config{
		Certificates: []tls.Certificate{loadPair(t, certFile, keyFile)},
		ClientCAs:    p.CertPool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientTLS issues a client certificate as Client does and returns a new
// configuration for an in-process TLS client that trusts p and presents
// the certificate when asked.
func (p *PKI) ClientTLS(t testing.TB, name, cn string) *tls.Config {
	t.Helper()
	certFile, keyFile := p.Client(t, name, cn)
	return &tls.Config{
		Certificates: []tls.Certificate{loadPair(t, certFile, keyFile)},
		RootCAs:      p.CertPool,
		MinVersion:   tls.VersionTLS12,
	}
}

// serverTemplate is the template of a server certificate for hosts.
func serverTemplate(hosts []string) *x509.Certificate {
	if len(hosts) == 0 {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return tmpl
}

// issue signs tmpl with a new key and a new serial and writes the files
// for name.
func (p *PKI) issue(t testing.TB, name string, tmpl *x509.Certificate) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = p.newSerial(t)
	tmpl.NotBefore = p.ca.NotBefore
	tmpl.NotAfter = p.ca.NotAfter
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatalf("testpki: create the certificate %s: %v", name, err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatalf("testpki: parse the certificate %s: %v", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal the key of %s: %v", name, err)
	}
	certFile = filepath.Join(p.Dir, name+".pem")
	keyFile = filepath.Join(p.Dir, name+"-key.pem")
	writeFile(t, certFile, pemBlock("CERTIFICATE", der), 0o644)
	writeFile(t, keyFile, pemBlock("PRIVATE KEY", keyDER), 0o600)
	return certFile, keyFile, cert
}

// newSerial returns a random positive serial number that p has not issued
// before. Random rather than counted, so that certificates from different
// test CAs do not share an issuer name and serial either.
func (p *PKI) newSerial(t testing.TB) *big.Int {
	t.Helper()
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			t.Fatalf("testpki: serial number: %v", err)
		}
		if n.Sign() > 0 && !p.serials[n.Text(16)] {
			p.serials[n.Text(16)] = true
			return n
		}
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testpki: generate a key: %v", err)
	}
	return key
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile replaces path with data: it writes a temporary file in the
// same directory and renames it over path.
func writeFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		t.Fatalf("testpki: write %s: %v", path, err)
	}
}

func loadPair(t testing.TB, certFile, keyFile string) tls.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("testpki: %v", err)
	}
	return pair
}
