package rsakey_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
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

	"github.com/diamondd/diamondd/internal/channel/rsakey"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestPrivateKey(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der8, _ := x509.MarshalPKCS8PrivateKey(key)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	for _, tc := range []struct {
		name    string
		format  rsakey.Format
		data    []byte
		wantErr string
	}{
		{"pkcs1", rsakey.PEM, pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)), ""},
		{"pkcs8", rsakey.PEM, pemOf("PRIVATE KEY", der8), ""},
		{"pkcs8 among base64", rsakey.PEMOrBase64, pemOf("PRIVATE KEY", der8), ""},
		{"bare base64", rsakey.PEMOrBase64, []byte(base64.StdEncoding.EncodeToString(der8) + "\n"), ""},
		{"bare base64 in PEM", rsakey.PEM, []byte(base64.StdEncoding.EncodeToString(der8)), "no PEM block"},
		{"empty", rsakey.PEMOrBase64, []byte(" \n"), "empty key"},
		{"not base64", rsakey.PEMOrBase64, []byte("not base64 !"), "neither PEM nor base64"},
		{"junk in PEM", rsakey.PEM, pemOf("PRIVATE KEY", []byte{0, 0, 0}), "not a PKCS #1 or PKCS #8"},
		{"ecdsa", rsakey.PEM, pemOf("PRIVATE KEY", ecDER), "want RSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.format.PrivateKey(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(key) {
				t.Fatalf("key differs, err = %v", err)
			}
		})
	}
}

func TestPublicKey(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkixDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5157F09E), Subject: pkix.Name{CommonName: "rsakey test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	for _, tc := range []struct {
		name     string
		format   rsakey.Format
		data     []byte
		wantCert bool
		wantErr  string
	}{
		{"pkix", rsakey.PEM, pemOf("PUBLIC KEY", pkixDER), false, ""},
		{"pkcs1", rsakey.PEM, pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&key.PublicKey)), false, ""},
		{"certificate", rsakey.PEM, pemOf("CERTIFICATE", certDER), true, ""},
		{"bare base64 pkix", rsakey.PEMOrBase64, []byte(base64.StdEncoding.EncodeToString(pkixDER)), false, ""},
		{"bare base64 in PEM", rsakey.PEM, []byte(base64.StdEncoding.EncodeToString(pkixDER)), false, "no PEM block"},
		{"junk", rsakey.PEM, pemOf("PUBLIC KEY", []byte{0, 0, 0}), false, "not a PKIX or PKCS #1"},
		{"ecdsa", rsakey.PEM, pemOf("PUBLIC KEY", ecDER), false, "want RSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, cert, err := tc.format.PublicKey(tc.data)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(&key.PublicKey) {
				t.Fatalf("key differs, err = %v", err)
			}
			if (cert != nil) != tc.wantCert || (cert != nil && cert.SerialNumber.Int64() != 0x5157F09E) {
				t.Fatalf("certificate %v, want one: %v", cert, tc.wantCert)
			}
		})
	}
}

func TestFromEnvFile(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	for path, data := range map[string]string{good: "key", bad: "junk"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	parse := func(b []byte) (string, error) {
		if string(b) != "key" {
			return "", os.ErrInvalid
		}
		return string(b), nil
	}
	for _, tc := range []struct {
		name, path, wantErr string
	}{
		{"good", good, ""},
		{"unset", " ", "KEY_FILE is required"},
		{"missing", filepath.Join(dir, "none"), "KEY_FILE: open"},
		{"unparsable", bad, "KEY_FILE: " + bad + ": invalid argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "KEY_FILE" {
					return tc.path
				}
				return ""
			}
			got, err := rsakey.FromEnvFile(getenv, "KEY_FILE", parse)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != "key" {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}
