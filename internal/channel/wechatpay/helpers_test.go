package wechatpay_test

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/wechatpay"
	"github.com/diamondd/diamondd/internal/channel/wechatpay/wechatpaytest"
)

var otherKey struct {
	once sync.Once
	key  *rsa.PrivateKey
}

// strangerKey is an RSA key that is not the fake's.
func strangerKey() *rsa.PrivateKey {
	otherKey.once.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		otherKey.key = k
	})
	return otherKey.key
}

// signHeaders signs like WeChat Pay, written here independently of the
// adapter and the fake.
func signHeaders(t testing.TB, key *rsa.PrivateKey, serial string, at time.Time, nonce string, body []byte) http.Header {
	ts := strconv.FormatInt(at.Unix(), 10)
	sum := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(sig))
	h.Set("Wechatpay-Serial", serial)
	h.Set("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")
	return h
}

// seal is AEAD_AES_256_GCM as WeChat Pay applies it, written independently.
func seal(t testing.TB, key, nonce, aad string, plaintext []byte) string {
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(gcm.Seal(nil, []byte(nonce), plaintext, []byte(aad)))
}

// receiver is our webhook endpoint in miniature.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	ch     *wechatpay.Channel
	events []channel.Event
	errs   []error
	answer func(n int) int // replaces the adapter's status when set
	n      int
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.n++
	n, answer, ch := rc.n, rc.answer, rc.ch
	rc.mu.Unlock()
	evs, err := ch.ParseWebhook(r.Context(), r.Header, body)
	rc.mu.Lock()
	rc.events = append(rc.events, evs...)
	if err != nil {
		rc.errs = append(rc.errs, err)
	}
	rc.mu.Unlock()
	resp := ch.WebhookResponse(err)
	if answer != nil {
		resp.Status = answer(n)
		resp.Body = []byte(`{"code":"FAIL","message":"test"}`)
	}
	if resp.ContentType != "" {
		w.Header().Set("Content-Type", resp.ContentType)
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

func (rc *receiver) Events() []channel.Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]channel.Event(nil), rc.events...)
}

func (rc *receiver) setAnswer(f func(int) int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.answer = f
}

type env struct {
	fake *wechatpaytest.Server
	ch   *wechatpay.Channel
	rc   *receiver
}

func setup(t *testing.T, opts wechatpaytest.Options, mod func(*wechatpay.Config)) *env {
	t.Helper()
	fake := wechatpaytest.New(t, opts)
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	cfg := fake.Config()
	cfg.NotifyURL = rc.srv.URL + "/v1/webhooks/wechatpay"
	if mod != nil {
		mod(&cfg)
	}
	ch, err := wechatpay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.ch = ch
	rc.mu.Unlock()
	return &env{fake: fake, ch: ch, rc: rc}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
