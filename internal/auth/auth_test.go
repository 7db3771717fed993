package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/diamondd/diamondd/internal/auth"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func claims(extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "u1", "role": "user", "exp": now.Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func TestVerify(t *testing.T) {
	secret := []byte("test-secret")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	otherRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)

	// The RSA key comes from a PEM file and the EC key from a JWKS file, as in production.
	dir := t.TempDir()
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	require.NoError(t, err)
	pemPath := filepath.Join(dir, "rsa.pem")
	require.NoError(t, os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	rsaPub, err := auth.LoadPublicKeyPEM(pemPath)
	require.NoError(t, err)
	jwksPath := filepath.Join(dir, "jwks.json")
	b64 := base64.RawURLEncoding.EncodeToString
	ecPub, err := ecKey.PublicKey.ECDH()
	require.NoError(t, err)
	raw := ecPub.Bytes() // 0x04 || X || Y
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])},
	}})
	require.NoError(t, os.WriteFile(jwksPath, jwks, 0o600))
	byID, err := auth.LoadJWKS(jwksPath)
	require.NoError(t, err)

	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret, PublicKeys: []crypto.PublicKey{rsaPub},
		KeysByID: byID, Audience: "diamondd", Now: func() time.Time { return now }})
	require.NoError(t, err)

	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
		tok := jwt.NewWithClaims(m, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		require.NoError(t, err)
		return s
	}
	aud := jwt.MapClaims{"aud": "diamondd"}
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"HS256 valid", sign(jwt.SigningMethodHS256, secret, claims(aud), ""), true},
		{"RS256 valid", sign(jwt.SigningMethodRS256, rsaKey, claims(aud), ""), true},
		{"ES256 by kid", sign(jwt.SigningMethodES256, ecKey, claims(aud), "ec1"), true},
		{"expired", sign(jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"aud": "diamondd", "exp": now.Add(-time.Minute).Unix()}), ""), false},
		{"no exp", sign(jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"aud": "diamondd", "exp": nil}), ""), false},
		{"wrong secret", sign(jwt.SigningMethodHS256, []byte("other"), claims(aud), ""), false},
		{"wrong RSA key", sign(jwt.SigningMethodRS256, otherRSA, claims(aud), ""), false},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(aud), ""), false},
		{"HS512 not accepted", sign(jwt.SigningMethodHS512, secret, claims(aud), ""), false},
		{"wrong audience", sign(jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"aud": "other"}), ""), false},
		{"unknown role", sign(jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"aud": "diamondd", "role": "admin"}), ""), false},
		{"no subject", sign(jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"aud": "diamondd", "sub": nil}), ""), false},
		{"bad birthdate", sign(jwt.SigningMethodHS256, secret, claims(jwt.MapClaims{"aud": "diamondd", "birthdate": "2012-13-01"}), ""), false},
		{"garbage", "not.a.token", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Verify(tc.token)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, auth.Principal{Subject: "u1", Role: auth.RoleUser}, p)
			} else {
				require.ErrorIs(t, err, auth.ErrUnauthenticated)
			}
		})
	}
}

func TestSignCarriesBirthdate(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte("s"), Now: func() time.Time { return now }})
	require.NoError(t, err)
	tok, err := auth.Sign([]byte("s"), auth.Principal{Subject: "kid", Role: auth.RoleUser, Birthdate: "2008-11-22"}, time.Hour, now)
	require.NoError(t, err)
	p, err := v.Verify(tok)
	require.NoError(t, err)
	require.Equal(t, "2008-11-22", p.Birthdate, "ages are counted by risk.Age, on the Beijing date")
}

// TestBirthdateNotAfterToday: a birthdate after today, on the Asia/Shanghai
// calendar the age rule counts on, is no one's and would count as an adult;
// the token is refused like a malformed birthdate (found in review).
func TestBirthdateNotAfterToday(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		at        time.Time
		birthdate string
		ok        bool
	}{
		{"born today", now, "2026-11-21", true},
		{"born yesterday", now, "2026-11-20", true},
		{"born tomorrow", now, "2026-11-22", false},
		{"far future", now, "2099-01-01", false},
		// 17:00 UTC is already 01:00 on the 22nd in Beijing.
		{"today in Shanghai, tomorrow in UTC", time.Date(2026, 11, 21, 17, 0, 0, 0, time.UTC), "2026-11-22", true},
		{"tomorrow in Shanghai", time.Date(2026, 11, 21, 15, 59, 59, 0, time.UTC), "2026-11-22", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte("s"), Now: func() time.Time { return tc.at }})
			require.NoError(t, err)
			tok, err := auth.Sign([]byte("s"), auth.Principal{Subject: "u1", Role: auth.RoleUser, Birthdate: tc.birthdate}, time.Hour, tc.at)
			require.NoError(t, err)
			p, err := v.Verify(tok)
			if tc.ok {
				require.NoError(t, err)
				require.Equal(t, tc.birthdate, p.Birthdate)
			} else {
				require.ErrorIs(t, err, auth.ErrUnauthenticated)
			}
		})
	}
}
