package wechatpay

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/diamondd/diamondd/internal/channel/rsakey"
)

// ParsePrivateKey reads our merchant key (apiclient_key.pem): PEM "PRIVATE
// KEY" (PKCS #8, what WeChat's tool writes) or "RSA PRIVATE KEY" (PKCS #1).
func ParsePrivateKey(data []byte) (*rsa.PrivateKey, error) {
	return rsakey.PEM.PrivateKey(data)
}

// ParsePublicKey reads a WeChat Pay key: the platform certificate (PEM
// "CERTIFICATE"; its serial is returned, upper-case hex as WeChat writes it)
// or the WeChat Pay public key (PEM "PUBLIC KEY", PKIX, or "RSA PUBLIC KEY";
// serial ""). The certificate chain is not checked: the key is pinned by
// configuration.
func ParsePublicKey(data []byte) (key *rsa.PublicKey, certSerial string, err error) {
	key, cert, err := rsakey.PEM.PublicKey(data)
	if err != nil || cert == nil {
		return key, "", err
	}
	return key, strings.ToUpper(cert.SerialNumber.Text(16)), nil
}

// pubKeyIDPrefix starts the id of a WeChat Pay public key, an opaque name.
const pubKeyIDPrefix = "PUB_KEY_ID_"

// platformSerial is the form a platform key is stored and looked up under.
// A certificate serial is hex, which WeChat Pay writes in upper case
// (Wechatpay-Serial) and an operator may copy in lower case: both name the
// same key. A public key id, in whatever case, is an opaque name and stays
// exact.
func platformSerial(serial string) string {
	upper := strings.ToUpper(serial)
	if strings.HasPrefix(upper, pubKeyIDPrefix) {
		return serial
	}
	return upper
}

// ParsePlatformKeys reads a WECHATPAY_PLATFORM_KEYS list:
// "serial=path[,serial=path…]", each path a PEM certificate or public key.
// For a certificate, the serial must be the certificate's, in either case;
// the key is stored under platformSerial.
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
		if _, dup := keys[platformSerial(serial)]; dup {
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
		keys[platformSerial(serial)] = key
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
	var err error
	if cfg.PrivateKey, err = rsakey.FromEnvFile(getenv, EnvPrivateKey, ParsePrivateKey); err != nil {
		return Config{}, err
	}
	if cfg.PlatformKeys, err = ParsePlatformKeys(get(EnvPlatformKeys), os.ReadFile); err != nil {
		return Config{}, fmt.Errorf("%s: %w", EnvPlatformKeys, err)
	}
	return cfg, nil
}
