package alipay

import (
	"crypto/rsa"
	"fmt"
	"strings"

	"github.com/diamondd/diamondd/internal/channel/rsakey"
)

// ParsePrivateKey reads an RSA private key: PEM "RSA PRIVATE KEY" (PKCS #1)
// or "PRIVATE KEY" (PKCS #8), or the bare base64 DER the Alipay key tool
// prints.
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	return rsakey.PEMOrBase64.PrivateKey(data)
}

// ParsePublicKey reads an RSA public key: PEM "PUBLIC KEY" (PKIX), "RSA
// PUBLIC KEY" (PKCS #1) or "CERTIFICATE" (public-key-certificate mode; the
// certificate chain is not checked here), or the bare base64 DER of a PKIX
// key as the Alipay console shows it.
func ParsePublicKey(data []byte) (*rsa.PublicKey, error) {
	key, _, err := rsakey.PEMOrBase64.PublicKey(data)
	return key, err
}

// Environment variables read by LoadConfig (see API.md, Operations).
const (
	EnvAppID      = "ALIPAY_APP_ID"
	EnvPrivateKey = "ALIPAY_PRIVATE_KEY_FILE"
	EnvPublicKey  = "ALIPAY_PUBLIC_KEY_FILE"
	EnvBaseURL    = "ALIPAY_BASE_URL"
	EnvNotifyURL  = "ALIPAY_NOTIFY_URL" // optional here; main may set Config.NotifyURL itself
	EnvSellerID   = "ALIPAY_SELLER_ID"  // optional: notifications must name this seller
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
		SellerID:  strings.TrimSpace(getenv(EnvSellerID)),
	}
	if cfg.SellerID != "" && !isPartnerID(cfg.SellerID) {
		return Config{}, fmt.Errorf("%s: want 2088 followed by 12 digits", EnvSellerID)
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
	var err error
	if cfg.PrivateKey, err = rsakey.FromEnvFile(getenv, EnvPrivateKey, ParsePrivateKey); err != nil {
		return Config{}, err
	}
	if cfg.AlipayPublicKey, err = rsakey.FromEnvFile(getenv, EnvPublicKey, ParsePublicKey); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// isPartnerID reports whether s looks like an Alipay partner (merchant) id:
// 2088 followed by 12 digits.
func isPartnerID(s string) bool {
	if len(s) != 16 || !strings.HasPrefix(s, "2088") {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
