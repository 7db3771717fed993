package alipay

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

// ParsePrivateKey reads an RSA private key: PEM "RSA PRIVATE KEY" (PKCS #1)
// or "PRIVATE KEY" (PKCS #8), or the bare base64 DER the Alipay key tool
// prints.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	der, err := keyDER(data)
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

// ParsePublicKey reads an RSA public key: PEM "PUBLIC KEY" (PKIX), "RSA
// PUBLIC KEY" (PKCS #1) or "CERTIFICATE" (public-key-certificate mode; the
// certificate chain is not checked here), or the bare base64 DER of a PKIX
// key as the Alipay console shows it.
func ParsePublicKey(data []byte) (*rsa.PublicKey, error) {
	der, err := keyDER(data)
	if err != nil {
		return nil, err
	}
	var pub any
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		pub = k
	} else if k, err := x509.ParsePKCS1PublicKey(der); err == nil {
		pub = k
	} else if cert, err := x509.ParseCertificate(der); err == nil {
		pub = cert.PublicKey
	} else {
		return nil, errors.New("not a PKIX or PKCS #1 public key or a certificate")
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, want RSA", pub)
	}
	return rk, nil
}

// keyDER takes the first PEM block, or base64 DER when there is no PEM.
func keyDER(data []byte) ([]byte, error) {
	if block, _ := pem.Decode(data); block != nil {
		return block.Bytes, nil
	}
	s := strings.Join(strings.Fields(string(data)), "")
	if s == "" {
		return nil, errors.New("empty key")
	}
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("neither PEM nor base64 DER")
	}
	return der, nil
}

// Environment variables read by LoadConfig (see API.md, Operations).
const (
	EnvAppID      = "ALIPAY_APP_ID"
	EnvPrivateKey = "ALIPAY_PRIVATE_KEY_FILE"
	EnvPublicKey  = "ALIPAY_PUBLIC_KEY_FILE"
	EnvBaseURL    = "ALIPAY_BASE_URL"
	EnvNotifyURL  = "ALIPAY_NOTIFY_URL" // optional here; main may set Config.NotifyURL itself
)

// LoadConfig builds a Config from environment-style settings (pass
// os.Getenv), reading the key files. Errors name the variable at fault.
// HTTPClient, Timeout and Now are left for the caller; NotifyURL is filled
// from ALIPAY_NOTIFY_URL when set (New requires it either way).
func LoadConfig(getenv func(string) string) (Config, error) {
	cfg := Config{
		AppID:     strings.TrimSpace(getenv(EnvAppID)),
		BaseURL:   strings.TrimSpace(getenv(EnvBaseURL)),
		NotifyURL: strings.TrimSpace(getenv(EnvNotifyURL)),
	}
	if cfg.AppID == "" {
		return Config{}, fmt.Errorf("%s is required", EnvAppID)
	}
	if cfg.BaseURL == "" {
		return Config{}, fmt.Errorf("%s is required (e.g. %s)", EnvBaseURL, ProductionGateway)
	}
	if err := checkURL(cfg.BaseURL); err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvBaseURL, err)
	}
	keyData, err := readFileVar(getenv, EnvPrivateKey)
	if err != nil {
		return Config{}, err
	}
	if cfg.PrivateKey, err = ParsePrivateKey(keyData); err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvPrivateKey, err)
	}
	pubData, err := readFileVar(getenv, EnvPublicKey)
	if err != nil {
		return Config{}, err
	}
	if cfg.AlipayPublicKey, err = ParsePublicKey(pubData); err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvPublicKey, err)
	}
	return cfg, nil
}

func readFileVar(getenv func(string) string, name string) ([]byte, error) {
	path := strings.TrimSpace(getenv(name))
	if path == "" {
		return nil, fmt.Errorf("%s is required", name)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return data, nil
}
