package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"time"
)

// TLS for wick serve. Browsers give WebGPU only to secure contexts:
// http://localhost is one, http://192.168.1.5 is not, so a chat page served
// to another machine needs https.

// LoadCert reads a certificate and key (PEM files) and returns a TLS config
// serving them, with the names the certificate is for (its DNS names and
// IP addresses), which the server then answers to.
func LoadCert(certFile, keyFile string) (*tls.Config, []string, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, nil, fmt.Errorf("tls: %s: %w", certFile, err)
	}
	return tlsConfig(cert), certNames(leaf), nil
}

// SelfSigned makes a fresh self-signed certificate for the host of addr
// (on a wildcard address: every interface address) and the loopback names.
// It returns the TLS config, the certificate's names, and the base64
// sha256 of its public key (SPKI), which Chromium trusts when started with
// --ignore-certificate-errors-spki-list=SPKI.
func SelfSigned(addr string, ifaceAddrs func() ([]net.Addr, error)) (cfg *tls.Config, names []string, spki string, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, "", fmt.Errorf("tls: listen address %q: %w", addr, err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "wick serve (self-signed)"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(90 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	addName := func(h string) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" && h != "localhost" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		addrs, err := ifaceAddrs()
		if err != nil {
			return nil, nil, "", fmt.Errorf("tls: interface addresses: %w", err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
				addName(n.IP.String())
			}
		}
	} else if ip == nil || !ip.IsLoopback() {
		addName(host)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", fmt.Errorf("tls: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, "", fmt.Errorf("tls: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("tls: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, "", fmt.Errorf("tls: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return tlsConfig(cert), certNames(leaf), SPKIHash(leaf), nil
}

// SPKIHash is the base64 sha256 of a certificate's public key, the form
// Chromium's --ignore-certificate-errors-spki-list takes.
func SPKIHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

func tlsConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// URLs are the addresses to print for a server listening on ln: a host
// and port a browser can open, never a wildcard such as [::] or 0.0.0.0.
// On a wildcard address the first is loopback, then every other interface
// address (IPv4 first), where other machines reach it.
func URLs(ln net.Addr, scheme string, ifaceAddrs func() ([]net.Addr, error)) ([]string, error) {
	tcp, ok := ln.(*net.TCPAddr)
	if !ok {
		return nil, errors.New("server: not a TCP listener")
	}
	port := strconv.Itoa(tcp.Port)
	url := func(ip net.IP) string { return scheme + "://" + net.JoinHostPort(ip.String(), port) + "/" }
	if !tcp.IP.IsUnspecified() {
		return []string{url(tcp.IP)}, nil
	}
	// 127.0.0.1 answers on 0.0.0.0 and on a dual-stack [::] alike.
	urls := []string{url(net.IPv4(127, 0, 0, 1))}
	addrs, err := ifaceAddrs()
	if err != nil {
		return urls, nil // loopback alone still works
	}
	var v4, v6 []string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			v4 = append(v4, url(n.IP))
		} else {
			v6 = append(v6, url(n.IP))
		}
	}
	return append(append(urls, v4...), v6...), nil
}
