package wechatpaytest

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/diamondd/diamondd/internal/channel/channeltest"
)

const scheme = "WECHATPAY2-SHA256-RSA2048"

// SignHeaders returns the Wechatpay-* headers WeChat Pay sends with body,
// signed with the platform key at time at (the fake's clock when zero).
// Tests use it to craft notifications and to move the timestamp.
func (s *Server) SignHeaders(body []byte, at time.Time) http.Header {
	if at.IsZero() {
		at = s.opts.Now()
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	nonce := upperHex(16)
	h := http.Header{}
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", channeltest.SignSHA256(s.platformKey, []byte(ts+"\n"+nonce+"\n"+string(body)+"\n")))
	h.Set("Wechatpay-Serial", s.opts.PlatformSerial)
	h.Set("Wechatpay-Signature-Type", scheme)
	return h
}

// Resource is the encrypted "resource" object of a notification.
type Resource struct {
	OriginalType   string `json:"original_type"`
	Algorithm      string `json:"algorithm"`
	Ciphertext     string `json:"ciphertext"`
	AssociatedData string `json:"associated_data"`
	Nonce          string `json:"nonce"`
}

// EncryptResource seals plaintext with the APIv3 key (AEAD_AES_256_GCM, a
// fresh 12-character nonce, associatedData as AAD).
func (s *Server) EncryptResource(originalType, associatedData string, plaintext []byte) Resource {
	block, err := aes.NewCipher([]byte(s.opts.APIv3Key))
	if err != nil {
		panic(err) // the key length is checked in Start
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	nonce := channeltest.RandomHex(6) // 12 characters, as WeChat's nonces
	ct := gcm.Seal(nil, []byte(nonce), plaintext, []byte(associatedData))
	return Resource{
		OriginalType:   originalType,
		Algorithm:      "AEAD_AES_256_GCM",
		Ciphertext:     base64.StdEncoding.EncodeToString(ct),
		AssociatedData: associatedData,
		Nonce:          nonce,
	}
}

// verifyAuth checks the merchant's Authorization header: scheme, mchid,
// serial, a timestamp within five minutes and the RSA signature over
// "METHOD\nURI\nTIMESTAMP\nNONCE\nBODY\n" with the request target as received.
func (s *Server) verifyAuth(r *http.Request, body []byte) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, scheme+" ")
	if !ok {
		return errors.New("authorization scheme is not " + scheme)
	}
	f := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("authorization part %q", part)
		}
		f[k] = strings.Trim(v, `"`)
	}
	if f["mchid"] != s.opts.MchID {
		return fmt.Errorf("mchid %q", f["mchid"])
	}
	if f["serial_no"] != s.opts.MerchantSerial {
		return fmt.Errorf("serial_no %q is not the merchant certificate", f["serial_no"])
	}
	ts, err := strconv.ParseInt(f["timestamp"], 10, 64)
	if err != nil {
		return errors.New("timestamp")
	}
	if d := s.opts.Now().Unix() - ts; d >= 300 || d <= -300 {
		return errors.New("timestamp expired")
	}
	if f["nonce_str"] == "" {
		return errors.New("nonce_str missing")
	}
	sig, err := base64.StdEncoding.DecodeString(f["signature"])
	if err != nil {
		return errors.New("signature is not base64")
	}
	msg := r.Method + "\n" + r.RequestURI + "\n" + f["timestamp"] + "\n" + f["nonce_str"] + "\n" + string(body) + "\n"
	sum := sha256.Sum256([]byte(msg))
	if err := rsa.VerifyPKCS1v15(&s.merchantKey.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("merchant signature does not verify")
	}
	return nil
}

// writeSigned answers status with body and the Wechatpay-* headers, as the
// real API signs every answer (204 included).
func (s *Server) writeSigned(w http.ResponseWriter, status int, body []byte, badSignature bool) {
	h := s.SignHeaders(body, time.Time{})
	if badSignature {
		h = s.SignHeaders(append(append([]byte(nil), body...), ' '), time.Time{})
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Request-ID", "08"+upperHex(12))
	if len(body) > 0 {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
