package wechatpay_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel/wechatpay"
	"github.com/diamondd/diamondd/internal/channel/wechatpay/wechatpaytest"
)

func TestNewNamesWhatIsMissing(t *testing.T) {
	_, err := wechatpay.New(wechatpay.Config{})
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, f := range []string{"MchID", "AppID", "PrivateKey", "CertSerial", "APIv3Key", "PlatformKeys", "BaseURL", "NotifyURL"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %s", err, f)
		}
	}
	fake := wechatpaytest.New(t, wechatpaytest.Options{})
	for name, mod := range map[string]func(*wechatpay.Config){
		"APIv3Key":  func(c *wechatpay.Config) { c.APIv3Key = "short" },
		"NotifyURL": func(c *wechatpay.Config) { c.NotifyURL = "https://x.example/hook?a=b" },
		"BaseURL":   func(c *wechatpay.Config) { c.BaseURL = "api.mch.weixin.qq.com" },
	} {
		cfg := fake.Config()
		cfg.NotifyURL = "https://x.example/hook"
		mod(&cfg)
		if _, err := wechatpay.New(cfg); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("bad %s: %v", name, err)
		}
	}
}

func TestParseKeys(t *testing.T) {
	key := strangerKey()
	der8, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, data := range map[string][]byte{
		"pkcs8": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der8}),
		"pkcs1": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	} {
		if got, err := wechatpay.ParsePrivateKey(data); err != nil || !got.Equal(key) {
			t.Errorf("private %s: %v", name, err)
		}
	}
	if _, err := wechatpay.ParsePrivateKey([]byte("no pem")); err == nil {
		t.Error("garbage private key accepted")
	}

	dir := t.TempDir()
	writeCert(t, filepath.Join(dir, "cert.pem"), key, 0x5157F09E)
	pkixDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	files := map[string][]byte{
		"pub.pem": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkixDER}),
		"bad.pem": []byte("nothing"),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	keys, err := wechatpay.ParsePlatformKeys(" 5157F09E="+p("cert.pem")+", PUB_KEY_ID_1="+p("pub.pem"), os.ReadFile)
	if err != nil || len(keys) != 2 || !keys["5157F09E"].Equal(&key.PublicKey) || !keys["PUB_KEY_ID_1"].Equal(&key.PublicKey) {
		t.Fatalf("platform keys: %v, %v", keys, err)
	}
	for name, list := range map[string]string{
		"serial mismatch":  "DEADBEEF=" + p("cert.pem"),
		"bad file":         "S=" + p("bad.pem"),
		"missing file":     "S=" + p("none.pem"),
		"no equals":        p("pub.pem"),
		"duplicate":        "S=" + p("pub.pem") + ",S=" + p("pub.pem"),
		"duplicate serial": "5157F09E=" + p("cert.pem") + ",5157f09e=" + p("cert.pem"),
		"empty":            " , ",
	} {
		if _, err := wechatpay.ParsePlatformKeys(list, os.ReadFile); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// writeCert writes a self-signed certificate of key with the given serial,
// as a WeChat Pay platform certificate is configured.
func writeCert(t *testing.T, path string, key *rsa.PrivateKey, serial int64) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "Tenpay.com Root CA test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A platform certificate serial is hex: WeChat Pay sends Wechatpay-Serial in
// upper case, an operator may configure it in lower case, and every answer
// must still verify. A public key id (PUB_KEY_ID_…) is matched exactly.
func TestPlatformSerialCase(t *testing.T) {
	key := strangerKey()
	dir := t.TempDir()
	cert, pub := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "pub.pem")
	writeCert(t, cert, key, 0x5157F09E)
	pkixDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkixDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		configured, sent string
		verifies         bool
	}{
		{"5157f09e=" + cert, "5157F09E", true},
		{"5157F09E=" + cert, "5157f09e", true},
		{"5157F09E=" + cert, "5157F09E", true},
		{"PUB_KEY_ID_1=" + pub, "PUB_KEY_ID_1", true},
		{"PUB_KEY_ID_1=" + pub, "pub_key_id_1", false},
	} {
		keys, err := wechatpay.ParsePlatformKeys(tc.configured, os.ReadFile)
		if err != nil {
			t.Fatalf("%s: %v", tc.configured, err)
		}
		fake := wechatpaytest.New(t, wechatpaytest.Options{PlatformKey: key, PlatformSerial: tc.sent})
		cfg := fake.Config()
		cfg.PlatformKeys, cfg.NotifyURL = keys, "https://diamondd.example/v1/webhooks/wechatpay"
		ch, err := wechatpay.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The fake signs its answer under the serial it sends.
		_, err = ch.QueryPayment(ctxT(t), "o-none")
		if (err == nil) != tc.verifies {
			t.Errorf("configured %s, sent %s: %v, want verified %v", tc.configured, tc.sent, err, tc.verifies)
		}
	}
}

func TestLoadConfigFromFakeEnv(t *testing.T) {
	fake := wechatpaytest.New(t, wechatpaytest.Options{})
	envs, err := fake.Env(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	envs[wechatpay.EnvNotifyURL] = "https://diamondd.example/v1/webhooks/wechatpay"
	cfg, err := wechatpay.LoadConfig(func(k string) string { return envs[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := fake.Config()
	if cfg.MchID != want.MchID || cfg.AppID != want.AppID || cfg.CertSerial != want.CertSerial || cfg.APIv3Key != want.APIv3Key ||
		cfg.BaseURL != want.BaseURL || !cfg.PrivateKey.Equal(want.PrivateKey) || len(cfg.PlatformKeys) != 1 ||
		!cfg.PlatformKeys[fake.PlatformSerial()].Equal(want.PlatformKeys[fake.PlatformSerial()]) {
		t.Fatalf("config differs: %+v", cfg)
	}
	ch, err := wechatpay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The loaded adapter talks to the fake.
	if _, err := ch.QueryPayment(ctxT(t), "o-none"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{wechatpay.EnvMchID, wechatpay.EnvAppID, wechatpay.EnvPrivateKey, wechatpay.EnvCertSerial,
		wechatpay.EnvAPIv3Key, wechatpay.EnvPlatformKeys, wechatpay.EnvBaseURL} {
		_, err := wechatpay.LoadConfig(func(k string) string {
			if k == v {
				return ""
			}
			return envs[k]
		})
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("without %s: %v", v, err)
		}
	}
	envs[wechatpay.EnvAPIv3Key] = "too-short"
	if _, err := wechatpay.LoadConfig(func(k string) string { return envs[k] }); err == nil || !strings.Contains(err.Error(), wechatpay.EnvAPIv3Key) {
		t.Errorf("short APIv3 key: %v", err)
	}
}
