// Package auth verifies bearer JWTs into a Principal and checks roles. It
// knows nothing of HTTP frameworks.
package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Role is what a caller may do.
type Role string

const (
	RoleUser        Role = "user"
	RoleSupport     Role = "support"
	RoleSupportLead Role = "support_lead"
	RoleService     Role = "service"
)

func (r Role) valid() bool {
	return r == RoleUser || r == RoleSupport || r == RoleSupportLead || r == RoleService
}

// IsSupport reports a support agent of either rank.
func (r Role) IsSupport() bool { return r == RoleSupport || r == RoleSupportLead }

// Principal is the verified caller.
type Principal struct {
	Subject   string
	Role      Role
	Birthdate string // YYYY-MM-DD, empty when the token has none
}

var (
	// ErrUnauthenticated: no token, or one that fails verification.
	ErrUnauthenticated = errors.New("auth: unauthenticated")
)

// Config says which tokens are accepted.
type Config struct {
	HMACSecret []byte             // HS256; empty disables it
	PublicKeys []crypto.PublicKey // RS256/ES256 keys without a kid
	KeysByID   map[string]crypto.PublicKey
	Issuer     string // checked when set
	Audience   string // checked when set
	// Now is the time exp and birthdate are judged at; nil is time.Now.
	Now func() time.Time
}

// china is the time zone ages are counted in (no daylight saving).
var china = time.FixedZone("CST", 8*60*60)

// Verifier checks tokens.
type Verifier struct {
	cfg     Config
	methods []string
}

// claims are the token's claims; birthdate is ours.
type claims struct {
	jwt.RegisteredClaims
	Role      Role   `json:"role"`
	Birthdate string `json:"birthdate,omitempty"`
}

// NewVerifier builds a verifier; at least one key is required.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg}
	if len(cfg.HMACSecret) > 0 {
		v.methods = append(v.methods, "HS256")
	}
	keys := append([]crypto.PublicKey(nil), cfg.PublicKeys...)
	for _, k := range cfg.KeysByID {
		keys = append(keys, k)
	}
	for _, k := range keys {
		switch k.(type) {
		case *rsa.PublicKey:
			if !slices.Contains(v.methods, "RS256") {
				v.methods = append(v.methods, "RS256")
			}
		case *ecdsa.PublicKey:
			if !slices.Contains(v.methods, "ES256") {
				v.methods = append(v.methods, "ES256")
			}
		default:
			return nil, fmt.Errorf("auth: unsupported public key type %T", k)
		}
	}
	if len(v.methods) == 0 {
		return nil, errors.New("auth: no JWT secret or public key configured")
	}
	return v, nil
}

// Verify checks a compact JWT and returns its principal. Only the configured
// algorithms are accepted (never "none"), exp is required, and iss/aud are
// checked when configured.
func (v *Verifier) Verify(token string) (Principal, error) {
	opts := []jwt.ParserOption{jwt.WithValidMethods(v.methods), jwt.WithExpirationRequired()}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	opts = append(opts, jwt.WithTimeFunc(v.cfg.Now))
	var c claims
	t, err := jwt.ParseWithClaims(token, &c, v.key, opts...)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 §4.1.11: extensions a recipient does not understand
		// must make it refuse the token, and this one understands none.
		return Principal{}, fmt.Errorf("%w: crit header extensions are not supported", ErrUnauthenticated)
	}
	if !validSubject(c.Subject) || !c.Role.valid() {
		return Principal{}, fmt.Errorf("%w: token needs a sub of 1 to %d printable characters and a known role", ErrUnauthenticated, MaxSubject)
	}
	if c.Birthdate != "" {
		b, err := time.Parse(time.DateOnly, c.Birthdate)
		if err != nil {
			return Principal{}, fmt.Errorf("%w: birthdate %q is not YYYY-MM-DD", ErrUnauthenticated, c.Birthdate)
		}
		// No one is born after today, and the age rule cannot count such a
		// date, so it would fail open: a minor's protections (channels, risk,
		// refunds) must not hang on a bogus claim. Today is the Asia/Shanghai
		// calendar date, the one ages are counted on.
		y, m, d := v.cfg.Now().In(china).Date()
		if b.After(time.Date(y, m, d, 0, 0, 0, 0, time.UTC)) {
			return Principal{}, fmt.Errorf("%w: birthdate %s is after today (%04d-%02d-%02d in Asia/Shanghai)", ErrUnauthenticated, c.Birthdate, y, m, d)
		}
	}
	return Principal{Subject: c.Subject, Role: c.Role, Birthdate: c.Birthdate}, nil
}

// MaxSubject is the longest sub accepted: a user id, which the API takes
// in paths and bodies up to this length (openapi.yaml).
const MaxSubject = 128

// validSubject keeps ids every part of the service can store and name: UTF-8
// text without control characters (PostgreSQL refuses NUL), not blank, and
// no longer than a user_id may be anywhere else in the API.
func validSubject(sub string) bool {
	if !utf8.ValidString(sub) || strings.TrimSpace(sub) == "" || utf8.RuneCountInString(sub) > MaxSubject {
		return false
	}
	return !strings.ContainsFunc(sub, unicode.IsControl)
}

func (v *Verifier) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case "HS256":
		return v.cfg.HMACSecret, nil
	case "RS256", "ES256":
		if kid, _ := t.Header["kid"].(string); kid != "" {
			if k, ok := v.cfg.KeysByID[kid]; ok {
				return k, nil
			}
		}
		var set jwt.VerificationKeySet
		for _, k := range v.cfg.PublicKeys {
			set.Keys = append(set.Keys, k)
		}
		if len(set.Keys) == 0 {
			for _, k := range v.cfg.KeysByID {
				set.Keys = append(set.Keys, k)
			}
		}
		return set, nil
	}
	return nil, fmt.Errorf("unexpected algorithm %s", t.Method.Alg())
}

// Sign makes an HS256 token, for `diamondd token` and tests.
func Sign(secret []byte, p Principal, ttl time.Duration, now time.Time) (string, error) {
	return SignFor(secret, "", "", p, ttl, now)
}

// SignFor is Sign with an issuer and an audience (each left out when
// empty), for a service that checks JWT_ISSUER and JWT_AUDIENCE.
func SignFor(secret []byte, issuer, audience string, p Principal, ttl time.Duration, now time.Time) (string, error) {
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   p.Subject,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Role:      p.Role,
		Birthdate: p.Birthdate,
	}
	if audience != "" {
		c.Audience = jwt.ClaimStrings{audience}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// LoadPublicKeyPEM reads a PEM public key (PKIX) or certificate.
func LoadPublicKeyPEM(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read public key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("public key %s: no PEM block", path)
	}
	switch block.Type {
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", path, err)
		}
		return cert.PublicKey, nil
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", path, err)
		}
		return k, nil
	}
}

// LoadJWKS reads a JSON Web Key Set file with RSA and P-256 keys by kid.
func LoadJWKS(path string) (map[string]crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read jwks: %w", err)
	}
	var set struct {
		Keys []struct {
			Kty, Kid, Crv, N, E, X, Y string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("jwks %s: %w", path, err)
	}
	out := map[string]crypto.PublicKey{}
	dec := base64.RawURLEncoding.DecodeString
	for _, k := range set.Keys {
		switch k.Kty {
		case "RSA":
			n, err1 := dec(k.N)
			e, err2 := dec(k.E)
			if err := errors.Join(err1, err2); err != nil || len(e) == 0 || len(e) > 4 {
				return nil, fmt.Errorf("jwks %s: key %q: bad n/e", path, k.Kid)
			}
			out[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		case "EC":
			if k.Crv != "P-256" {
				return nil, fmt.Errorf("jwks %s: key %q: curve %s not supported", path, k.Kid, k.Crv)
			}
			x, err1 := dec(k.X)
			y, err2 := dec(k.Y)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("jwks %s: key %q: bad x/y", path, k.Kid)
			}
			// Build the uncompressed point so the curve check happens on parse.
			pt := append([]byte{4}, append(pad32(x), pad32(y)...)...)
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
			if err != nil {
				return nil, fmt.Errorf("jwks %s: key %q: %w", path, k.Kid, err)
			}
			out[k.Kid] = pub
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("jwks %s: no usable keys", path)
	}
	return out, nil
}

func pad32(b []byte) []byte {
	if len(b) >= 32 {
		return b
	}
	return append(make([]byte, 32-len(b)), b...)
}
