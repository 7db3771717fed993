// Package rsakey reads the RSA keys payment channels are configured with:
// private keys in PKCS #1 or PKCS #8, public keys in PKIX, PKCS #1 or an
// X.509 certificate, as PEM or (for channels whose consoles print them that
// way) bare base64 DER, from files named by environment variables.
//
// Certificates are not checked against any chain: channel keys are pinned
// by configuration.
package rsakey

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Format is how a channel's key files are encoded.
type Format int

const (
	// PEM is a PEM file; only its first block is read.
	PEM Format = iota
	// PEMOrBase64 is PEM, or the bare base64 DER that some key tools print
	// (white space ignored).
	PEMOrBase64
)

// PrivateKey reads an RSA private key, PKCS #1 ("RSA PRIVATE KEY") or
// PKCS #8 ("PRIVATE KEY").
func (f Format) PrivateKey(data []byte) (*rsa.PrivateKey, error) {
	der, err := f.der(data)
	if err != nil {
		return nil, err
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("not a PKCS #1 or PKCS #8 private key")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want RSA", k)
	}
	return rk, nil
}

// PublicKey reads an RSA public key: PKIX ("PUBLIC KEY"), PKCS #1 ("RSA
// PUBLIC KEY") or the key of a certificate ("CERTIFICATE"), which is then
// returned too. The content decides, not the PEM block's type.
func (f Format) PublicKey(data []byte) (*rsa.PublicKey, *x509.Certificate, error) {
	der, err := f.der(data)
	if err != nil {
		return nil, nil, err
	}
	var (
		pub  any
		cert *x509.Certificate
	)
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		pub = k
	} else if k, err := x509.ParsePKCS1PublicKey(der); err == nil {
		pub = k
	} else if c, err := x509.ParseCertificate(der); err == nil {
		pub, cert = c.PublicKey, c
	} else {
		return nil, nil, errors.New("not a PKIX or PKCS #1 public key or a certificate")
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("public key is %T, want RSA", pub)
	}
	return rk, cert, nil
}

// der takes the first PEM block or, where the format allows, base64 DER.
func (f Format) der(data []byte) ([]byte, error) {
	if block, _ := pem.Decode(data); block != nil {
		return block.Bytes, nil
	}
	if f != PEMOrBase64 {
		return nil, errors.New("no PEM block")
	}
	s := strings.Join(strings.Fields(string(data)), "")
	if s == "" {
		return nil, errors.New("empty key")
	}
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("neither PEM nor base64 DER: %w", err)
	}
	return der, nil
}

// FromEnvFile reads the file named by the environment variable name (pass
// os.Getenv or a stand-in) and parses it. Errors name the variable, as
// operators set variables, not paths.
func FromEnvFile[K any](getenv func(string) string, name string, parse func([]byte) (K, error)) (K, error) {
	var zero K
	path := strings.TrimSpace(getenv(name))
	if path == "" {
		return zero, fmt.Errorf("%s is required", name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", name, err)
	}
	key, err := parse(data)
	if err != nil {
		return zero, fmt.Errorf("%s: %s: %w", name, path, err)
	}
	return key, nil
}
