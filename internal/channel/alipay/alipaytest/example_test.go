package alipaytest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/channel/alipay"
	"github.com/diamondd/diamondd/internal/channel/alipay/alipaytest"
)

// A whole payment against the fake: the adapter signs an order string, the
// fake plays the Alipay app paying it, and the notification reaches our
// webhook, which answers with the adapter's acknowledgement.
func Example() {
	fake, err := alipaytest.Start(alipaytest.Options{}) // in a test: alipaytest.New(t, alipaytest.Options{})
	if err != nil {
		panic(err)
	}
	defer fake.Close()

	var ch *alipay.Channel
	events := make(chan channel.Event, 10)
	webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		evs, err := ch.ParseWebhook(r.Context(), r.Header, body)
		for _, ev := range evs {
			events <- ev
		}
		resp := ch.WebhookResponse(err)
		w.WriteHeader(resp.Status)
		_, _ = w.Write(resp.Body)
	}))
	defer webhook.Close()

	cfg := fake.Config()
	cfg.NotifyURL = webhook.URL
	if ch, err = alipay.New(cfg); err != nil {
		panic(err)
	}
	ctx := context.Background()
	p, err := ch.CreatePayment(ctx, channel.Order{ID: "order-1", AmountFen: 600, Subject: "60 diamonds", ExpiresAt: time.Now().Add(15 * time.Minute)})
	if err != nil {
		panic(err)
	}
	if _, err := fake.PayOrderString(p.Pay["order_string"].(string)); err != nil {
		panic(err)
	}
	_ = fake.WaitIdle(ctx)
	ev := <-events
	fmt.Println(ev.Type, ev.OrderID, ev.AmountFen)

	st, _ := ch.Refund(ctx, channel.RefundRequest{OrderID: "order-1", RefundID: "refund-1", AmountFen: 200, TotalFen: 600})
	_ = fake.WaitIdle(ctx)
	ev = <-events
	fmt.Println(st.State, ev.Type, ev.RefundID)
	// Output:
	// payment.succeeded order-1 600
	// succeeded refund.succeeded refund-1
}
