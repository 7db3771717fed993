package alipay_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

func TestParseKeys(t *testing.T) {
	key := strangerKey(t)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	der8, _ := x509.MarshalPKCS8PrivateKey(key)
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der8})
	for name, data := range map[string][]byte{"pkcs1": pkcs1, "pkcs8": pkcs8, "bare base64": []byte(base64.StdEncoding.EncodeToString(der8) + "\n")} {
		got, err := alipay.ParsePrivateKey(data)
		if err != nil || !got.Equal(key) {
			t.Errorf("private %s: %v", name, err)
		}
	}
	pkixDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "alipay test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"pkix":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkixDER}),
		"pkcs1":       pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&key.PublicKey)}),
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}),
		"bare base64": []byte(base64.StdEncoding.EncodeToString(pkixDER)),
	} {
		got, err := alipay.ParsePublicKey(data)
		if err != nil || !got.Equal(&key.PublicKey) {
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
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	envs[alipay.EnvPublicKey] = bad
	if _, err := alipay.LoadConfig(func(k string) string { return envs[k] }); err == nil || !strings.Contains(err.Error(), alipay.EnvPublicKey) {
		t.Errorf("bad public key file: %v", err)
	}
}
