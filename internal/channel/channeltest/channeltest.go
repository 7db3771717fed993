// Package channeltest is the plumbing the loopback channel fakes
// (alipaytest, wechatpaytest) share: call counting and fault queues for
// their APIs, a notifier that pushes notifications on a compressed retry
// schedule until the receiver acknowledges them, and the process-wide test
// keys and their key files. What is the channel's own (what counts as an acknowledgement, how a
// notification is signed, how a fault is answered) stays in each fake.
package channeltest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Calls counts the calls a fake's API receives, by operation name, and
// queues the faults F injected into them. The zero value is ready to use;
// it is safe for concurrent use.
type Calls[F any] struct {
	mu     sync.Mutex
	counts map[string]int
	faults []queued[F]
}

type queued[F any] struct {
	op    string
	fault F
}

// Count is the number of calls of op received so far.
func (c *Calls[F]) Count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[op]
}

// Inject queues f for the next call of op; faults of one op apply in the
// order they were injected.
func (c *Calls[F]) Inject(op string, f F) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = append(c.faults, queued[F]{op, f})
}

// Take counts a call of op and takes the first fault queued for it, or nil.
func (c *Calls[F]) Take(op string) *F {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[op]++
	for i, q := range c.faults {
		if q.op == op {
			c.faults = append(c.faults[:i:i], c.faults[i+1:]...)
			return &q.fault
		}
	}
	return nil
}

// Sleep waits d and reports true, or reports false as soon as ctx ends (the
// client went away) or stop is closed (the fake is closing: it must not
// wait out an injected delay).
func Sleep(ctx context.Context, d time.Duration, stop <-chan struct{}) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// Compress scales a channel's real retry schedule so that a minute lasts a
// millisecond: a day of retries takes about 1.5 s.
func Compress(real ...time.Duration) []time.Duration {
	out := make([]time.Duration, len(real))
	for i, d := range real {
		out[i] = d / 60000
	}
	return out
}

// KeyPair is two RSA-2048 keys made on first use and reused by every fake
// of the process: key generation is the slow part of these tests. The zero
// value is ready to use.
type KeyPair struct {
	once sync.Once
	a, b *rsa.PrivateKey
	err  error
}

// Or returns a and b, with the pair's keys standing in for those that are
// nil.
func (k *KeyPair) Or(a, b *rsa.PrivateKey) (*rsa.PrivateKey, *rsa.PrivateKey, error) {
	if a != nil && b != nil {
		return a, b, nil
	}
	k.once.Do(func() {
		if k.a, k.err = rsa.GenerateKey(rand.Reader, 2048); k.err != nil {
			return
		}
		k.b, k.err = rsa.GenerateKey(rand.Reader, 2048)
	})
	if k.err != nil {
		return nil, nil, k.err
	}
	if a == nil {
		a = k.a
	}
	if b == nil {
		b = k.b
	}
	return a, b, nil
}

// SignSHA256 is SHA256withRSA (PKCS #1 v1.5), base64: the signature of
// Alipay's RSA2 and of WeChat Pay's WECHATPAY2-SHA256-RSA2048 alike.
func SignSHA256(key *rsa.PrivateKey, msg []byte) string {
	sum := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err) // cannot fail with a valid RSA-2048 key
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// RandomHex is n random bytes in lower-case hex, for ids and nonces.
func RandomHex(n int) string {
	b := make([]byte, n)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b)
}

// PrivateKeyPEM is k as PKCS #8 PEM, as the channels' key tools write it.
func PrivateKeyPEM(k *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err) // an RSA key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// PublicKeyPEM is k as PKIX PEM.
func PublicKeyPEM(k *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err) // an RSA key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// WriteKeyFiles writes priv (PKCS #8 PEM, readable by the owner only) and
// pub (PKIX PEM) into dir under the given names, as the service is given
// them, and returns their paths.
func WriteKeyFiles(dir, privName string, priv *rsa.PrivateKey, pubName string, pub *rsa.PublicKey) (privPath, pubPath string, err error) {
	privPath, pubPath = filepath.Join(dir, privName), filepath.Join(dir, pubName)
	if err := os.WriteFile(privPath, PrivateKeyPEM(priv), 0o600); err != nil {
		return "", "", fmt.Errorf("write private key: %w", err)
	}
	if err := os.WriteFile(pubPath, PublicKeyPEM(pub), 0o644); err != nil {
		return "", "", fmt.Errorf("write public key: %w", err)
	}
	return privPath, pubPath, nil
}
