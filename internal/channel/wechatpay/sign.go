package wechatpay

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	authScheme = "WECHATPAY2-SHA256-RSA2048"
	// signTestPrefix marks the deliberately bad signatures WeChat Pay sends
	// to check that merchants verify. They fail verification like any other
	// bad signature; naming them only keeps them out of alerts.
	signTestPrefix = "WECHATPAY/SIGNTEST/"
)

// sign is SHA256withRSA (PKCS #1 v1.5) with our merchant key, base64.
func (c *Channel) sign(message string) (string, error) {
	sum := sha256.Sum256([]byte(message))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

func newNonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	return strings.ToUpper(hex.EncodeToString(b)), nil
}

// authorization signs "METHOD\nURL\nTIMESTAMP\nNONCE\nBODY\n", where URL is
// the request target (absolute path and query) exactly as sent.
func (c *Channel) authorization(method, target string, body []byte) (string, error) {
	nonce, err := newNonce()
	if err != nil {
		return "", err
	}
	ts := strconv.FormatInt(c.now().Unix(), 10)
	sig, err := c.sign(method + "\n" + target + "\n" + ts + "\n" + nonce + "\n" + string(body) + "\n")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`%s mchid="%s",nonce_str="%s",signature="%s",timestamp="%s",serial_no="%s"`,
		authScheme, c.mchID, nonce, sig, ts, c.serial), nil
}

// errUnverified is wrapped by every verification failure.
var errUnverified = errors.New("wechat pay signature not verified")

// verify checks the Wechatpay-* headers over "TIMESTAMP\nNONCE\nBODY\n" with
// the platform key the serial names, and that the timestamp is within
// MaxClockSkew of our clock (a replayed message is refused).
func (c *Channel) verify(h http.Header, body []byte) error {
	ts, nonce := h.Get("Wechatpay-Timestamp"), h.Get("Wechatpay-Nonce")
	sigB64, serial := h.Get("Wechatpay-Signature"), h.Get("Wechatpay-Serial")
	switch {
	case ts == "":
		return fmt.Errorf("%w: no Wechatpay-Timestamp", errUnverified)
	case nonce == "":
		return fmt.Errorf("%w: no Wechatpay-Nonce", errUnverified)
	case sigB64 == "":
		return fmt.Errorf("%w: no Wechatpay-Signature", errUnverified)
	case serial == "":
		return fmt.Errorf("%w: no Wechatpay-Serial", errUnverified)
	}
	if st := h.Get("Wechatpay-Signature-Type"); st != "" && st != authScheme {
		return fmt.Errorf("%w: signature type %q", errUnverified, clip(st))
	}
	if strings.HasPrefix(sigB64, signTestPrefix) {
		return fmt.Errorf("%w: signature probe (%s)", errUnverified, signTestPrefix)
	}
	pub, ok := c.platform[platformSerial(serial)]
	if !ok {
		return fmt.Errorf("%w: unknown platform serial %q", errUnverified, clip(serial))
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", errUnverified, clip(ts))
	}
	now := c.now().Unix()
	// Compare in seconds without overflowing on absurd timestamps.
	const skew = int64(MaxClockSkew / time.Second)
	if sec <= now-skew || sec >= now+skew {
		return fmt.Errorf("%w: timestamp %d is more than %v from now", errUnverified, sec, MaxClockSkew)
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", errUnverified)
	}
	msg := make([]byte, 0, len(ts)+len(nonce)+len(body)+3)
	msg = append(append(append(msg, ts...), '\n'), nonce...)
	msg = append(append(append(msg, '\n'), body...), '\n')
	sum := sha256.Sum256(msg)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("%w: signature does not verify", errUnverified)
	}
	return nil
}

// decrypt opens an AEAD_AES_256_GCM resource with the APIv3 key.
func (c *Channel) decrypt(ciphertextB64, nonce, associatedData string) ([]byte, error) {
	block, err := aes.NewCipher(c.apiV3Key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	if len(nonce) != gcm.NonceSize() {
		return nil, fmt.Errorf("nonce is %d bytes, want %d", len(nonce), gcm.NonceSize())
	}
	ct, err := base64.StdEncoding.DecodeString(ciphertextB64)
	if err != nil {
		return nil, errors.New("ciphertext is not base64")
	}
	plain, err := gcm.Open(nil, []byte(nonce), ct, []byte(associatedData))
	if err != nil {
		return nil, errors.New("resource does not decrypt (wrong APIv3 key or altered ciphertext)")
	}
	return plain, nil
}

// clip bounds attacker-controlled text that ends up in errors and logs.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
