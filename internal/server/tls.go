package server

import (
	"crypto/tls"
	"net"
)

// tlsListener serves TLS on lis with config c.
func tlsListener(lis net.Listener, c *tls.Config) net.Listener {
	return tls.NewListener(lis, c)
}

// clientAuth maps listen.tls.client_auth to its tls type. It is used only
// when a client CA is set.
func clientAuth(mode string) tls.ClientAuthType {
	if mode == "verify_if_given" {
		return tls.VerifyClientCertIfGiven
	}
	return tls.RequireAndVerifyClientCert
}

// tlsVersion maps listen.tls.min_version to its tls constant.
func tlsVersion(v string) uint16 {
	if v == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}
