package alipay_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/alipay/alipaytest"
)

func TestNewNamesWhatIsMissing(t *testing.T) {
	_, err := alipay.New(alipay.Config{})
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, f := range []string{"AppID", "PrivateKey", "AlipayPublicKey", "BaseURL", "NotifyURL"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %s", err, f)
		}
	}
	fake := alipaytest.New(t, alipaytest.Options{})
	cfg := fake.Config()
	cfg.NotifyURL = "not a url"
	if _, err := alipay.New(cfg); err == nil || !strings.Contains(err.Error(), "NotifyURL") {
		t.Errorf("bad NotifyURL: %v", err)
	}
}

// The key formats themselves are rsakey's tests; here, that Alipay keys may
// also be the bare base64 the Alipay tools print.
func TestParseKeys(t *testing.T) {
	key := strangerKey(t)
	der8, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, data := range map[string][]byte{
		"pem":         pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"bare base64": []byte(base64.StdEncoding.EncodeToString(der8) + "\n"),
	} {
		if got, err := alipay.ParsePrivateKey(data); err != nil || !got.Equal(key) {
			t.Errorf("private %s: %v", name, err)
		}
	}
	pkixDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	for name, data := range map[string][]byte{
		"pem":         pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkixDER}),
		"bare base64": []byte(base64.StdEncoding.EncodeToString(pkixDER)),
	} {
		if got, err := alipay.ParsePublicKey(data); err != nil || !got.Equal(&key.PublicKey) {
			t.Errorf("public %s: %v", name, err)
		}
	}
	for _, bad := range []string{"", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not base64 !"} {
		if _, err := alipay.ParsePrivateKey([]byte(bad)); err == nil {
			t.Errorf("private %q accepted", bad)
		}
		if _, err := alipay.ParsePublicKey([]byte(bad)); err == nil {
			t.Errorf("public %q accepted", bad)
		}
	}
}

func TestLoadConfigFromFakeEnv(t *testing.T) {
	fake := alipaytest.New(t, alipaytest.Options{})
	envs, err := fake.Env(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	envs[alipay.EnvNotifyURL] = "https://diamondd.example/v1/webhooks/alipay"
	cfg, err := alipay.LoadConfig(func(k string) string { return envs[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := fake.Config()
	if cfg.AppID != want.AppID || cfg.BaseURL != want.BaseURL || !cfg.PrivateKey.Equal(want.PrivateKey) ||
		!cfg.AlipayPublicKey.Equal(want.AlipayPublicKey) || cfg.NotifyURL != envs[alipay.EnvNotifyURL] {
		t.Fatalf("config differs: %+v", cfg)
	}
	if _, err := alipay.New(cfg); err != nil {
		t.Fatal(err)
	}

	for _, v := range []string{alipay.EnvAppID, alipay.EnvPrivateKey, alipay.EnvPublicKey, alipay.EnvBaseURL} {
		missing := func(k string) string {
			if k == v {
				return ""
			}
			return envs[k]
		}
		if _, err := alipay.LoadConfig(missing); err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("without %s: %v", v, err)
		}
	}
	envs[alipay.EnvSellerID] = " 2088000000000001 "
	if cfg, err := alipay.LoadConfig(func(k string) string { return envs[k] }); err != nil || cfg.SellerID != "2088000000000001" {
		t.Errorf("seller id: %q, %v", cfg.SellerID, err)
	}
	for _, v := range []string{"2088", "1088000000000001", "2088OOOOOOOOOOO1", "20880000000000011"} {
		envs[alipay.EnvSellerID] = v
		if _, err := alipay.LoadConfig(func(k string) string { return envs[k] }); err == nil || !strings.Contains(err.Error(), alipay.EnvSellerID) {
			t.Errorf("seller id %q: %v", v, err)
		}
	}
	delete(envs, alipay.EnvSellerID)

	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	envs[alipay.EnvPublicKey] = bad
	if _, err := alipay.LoadConfig(func(k string) string { return envs[k] }); err == nil || !strings.Contains(err.Error(), alipay.EnvPublicKey) {
		t.Errorf("bad public key file: %v", err)
	}
}
