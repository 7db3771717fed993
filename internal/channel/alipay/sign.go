package alipay

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// signContent is the text RSA2 signs: every parameter except the excluded
// keys and except empty values, sorted by key, joined as k=v&k=v with the
// decoded values. Requests exclude only "sign"; notifications exclude "sign"
// and "sign_type" (the official SDK's getSignCheckContentV1). Only the first
// value of a key is used: callers reject repeated keys first.
func signContent(params url.Values, exclude ...string) string {
	keys := make([]string, 0, len(params))
	for k, v := range params {
		if len(v) == 0 || v[0] == "" || contains(exclude, k) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k][0])
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sign is RSA2: SHA256withRSA (PKCS #1 v1.5), base64.
func sign(key *rsa.PrivateKey, content string) (string, error) {
	sum := sha256.Sum256([]byte(content))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("rsa2 sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

var errSignature = errors.New("rsa2 signature does not verify")

// verify checks an RSA2 signature made by Alipay.
func verify(pub *rsa.PublicKey, content []byte, sigB64 string) error {
	if sigB64 == "" {
		return errors.New("no signature")
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return fmt.Errorf("signature is not base64: %w", err)
	}
	sum := sha256.Sum256(content)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return errSignature
	}
	return nil
}
