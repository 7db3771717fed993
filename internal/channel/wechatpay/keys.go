package wechatpay

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ParsePrivateKey reads our merchant key (apiclient_key.pem): PEM "PRIVATE
// KEY" (PKCS #8, what WeChat's tool writes) or "RSA PRIVATE KEY" (PKCS #1).
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a PKCS #1 or PKCS #8 private key")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want RSA", k)
	}
	return rk, nil
}

// ParsePublicKey reads a WeChat Pay key: the platform certificate (PEM
// "CERTIFICATE"; its serial is returned, upper-case hex as WeChat writes it)
// or the WeChat Pay public key (PEM "PUBLIC KEY", PKIX, or "RSA PUBLIC KEY";
// serial ""). The certificate chain is not checked: the key is pinned by
// configuration.
func ParsePublicKey(data []byte) (key *rsa.PublicKey, certSerial string, err error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("no PEM block")
	}
	var pub any
	switch {
	case block.Type == "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("certificate: %w", err)
		}
		pub, certSerial = cert.PublicKey, strings.ToUpper(cert.SerialNumber.Text(16))
	default:
		if k, err := x509.ParsePKIXPublicKey(block.Bytes); err == nil {
			pub = k
		} else if k, err := x509.ParsePKCS1PublicKey(block.Bytes); err == nil {
			pub = k
		} else {
			return nil, "", errors.New("not a PKIX or PKCS #1 public key or a certificate")
		}
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, "", fmt.Errorf("public key is %T, want RSA", pub)
	}
	return rk, certSerial, nil
}

// ParsePlatformKeys reads a WECHATPAY_PLATFORM_KEYS list:
// "serial=path[,serial=path…]", each path a PEM certificate or public key.
// For a certificate, the serial must be the certificate's.
func ParsePlatformKeys(list string, readFile func(string) ([]byte, error)) (map[string]*rsa.PublicKey, error) {
	keys := map[string]*rsa.PublicKey{}
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		serial, path, ok := strings.Cut(item, "=")
		serial, path = strings.TrimSpace(serial), strings.TrimSpace(path)
		if !ok || serial == "" || path == "" {
			return nil, fmt.Errorf("entry %q is not serial=path", item)
		}
		if _, dup := keys[serial]; dup {
			return nil, fmt.Errorf("serial %s listed twice", serial)
		}
		data, err := readFile(path)
		if err != nil {
			return nil, fmt.Errorf("serial %s: %w", serial, err)
		}
		key, certSerial, err := ParsePublicKey(data)
		if err != nil {
			return nil, fmt.Errorf("serial %s: %s: %w", serial, path, err)
		}
		if certSerial != "" && !strings.EqualFold(certSerial, serial) {
			return nil, fmt.Errorf("serial %s: %s is the certificate of serial %s", serial, path, certSerial)
		}
		keys[serial] = key
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	return keys, nil
}

// Environment variables read by LoadConfig (see API.md, Operations).
const (
	EnvMchID        = "WECHATPAY_MCH_ID"
	EnvAppID        = "WECHATPAY_APP_ID"
	EnvPrivateKey   = "WECHATPAY_PRIVATE_KEY_FILE"
	EnvCertSerial   = "WECHATPAY_CERT_SERIAL"
	EnvAPIv3Key     = "WECHATPAY_APIV3_KEY"
	EnvPlatformKeys = "WECHATPAY_PLATFORM_KEYS"
	EnvBaseURL      = "WECHATPAY_BASE_URL"
	EnvNotifyURL    = "WECHATPAY_NOTIFY_URL" // optional here; main may set Config.NotifyURL itself
)

// LoadConfig builds a Config from environment-style settings (pass
// os.Getenv), reading the key files. Errors name the variable at fault.
// HTTPClient, Timeout and Now are left for the caller; NotifyURL is filled
// from WECHATPAY_NOTIFY_URL when set (New requires it either way).
func LoadConfig(getenv func(string) string) (Config, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	cfg := Config{
		MchID:      get(EnvMchID),
		AppID:      get(EnvAppID),
		CertSerial: get(EnvCertSerial),
		APIv3Key:   get(EnvAPIv3Key),
		BaseURL:    get(EnvBaseURL),
		NotifyURL:  get(EnvNotifyURL),
	}
	for _, req := range []struct{ name, val string }{
		{EnvMchID, cfg.MchID}, {EnvAppID, cfg.AppID}, {EnvCertSerial, cfg.CertSerial},
		{EnvAPIv3Key, cfg.APIv3Key}, {EnvBaseURL, cfg.BaseURL},
		{EnvPrivateKey, get(EnvPrivateKey)}, {EnvPlatformKeys, get(EnvPlatformKeys)},
	} {
		if req.val == "" {
			return Config{}, fmt.Errorf("%s is required", req.name)
		}
	}
	if len(cfg.APIv3Key) != 32 {
		return Config{}, fmt.Errorf("%s must be 32 bytes, got %d", EnvAPIv3Key, len(cfg.APIv3Key))
	}
	data, err := os.ReadFile(get(EnvPrivateKey))
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvPrivateKey, err)
	}
	if cfg.PrivateKey, err = ParsePrivateKey(data); err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvPrivateKey, err)
	}
	if cfg.PlatformKeys, err = ParsePlatformKeys(get(EnvPlatformKeys), os.ReadFile); err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvPlatformKeys, err)
	}
	return cfg, nil
}
