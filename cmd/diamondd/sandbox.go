package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/diamondd/diamondd/internal/channel/sandbox"
)

const sandboxUsage = `usage: diamondd sandbox pay ORDER_ID --amount FEN [--trade NO] [--url URL]
       diamondd sandbox fail ORDER_ID [--reason TEXT] [--url URL]
       diamondd sandbox refund REFUND_ID [--failed] [--reason TEXT] [--url URL]

Plays the sandbox channel: signs a webhook with SANDBOX_WEBHOOK_SECRET and
posts it to diamondd. pay reports the order paid, fail reports its payment
failed, refund reports the refund paid out (or, with --failed, refused).
Flags may come before or after the id.

diamondd acknowledges every authentic event with 200 {"ok":true}, even one
for an order or refund it does not know (so that a channel stops
redelivering it): look at the order or refund to see the effect.
`

// sandboxFlags says which flags each verb takes.
var sandboxFlags = map[string][]string{
	"pay":    {"amount", "trade", "url"},
	"fail":   {"reason", "url"},
	"refund": {"failed", "reason", "url"},
}

// sandboxCmd plays the sandbox channel from the command line: it signs and
// posts a webhook as the channel would.
func sandboxCmd(ctx context.Context, args []string, out io.Writer) error {
	f := newFlags("sandbox", sandboxUsage)
	amount := f.Int64("amount", 0, "pay: the amount paid in fen, as the order says (required)")
	trade := f.String("trade", "", "pay: the channel's trade number (default: a new one)")
	failed := f.Bool("failed", false, "refund: report the refund failed")
	reason := f.String("reason", "", "fail, refund --failed: the failure reason")
	base := f.String("url", "http://localhost:8080", "diamondd's base URL")
	pos, err := f.parse(args, out, "pay, fail or refund", "ORDER_ID or REFUND_ID")
	if err != nil {
		return err
	}
	verb, id := pos[0], pos[1]
	allowed, ok := sandboxFlags[verb]
	if !ok {
		return f.fail("unknown sandbox command %q: pay, fail or refund", verb)
	}
	var misplaced error
	f.Visit(func(fl *flag.Flag) {
		if !slices.Contains(allowed, fl.Name) && misplaced == nil {
			misplaced = f.fail("--%s does not apply to sandbox %s", fl.Name, verb)
		}
	})
	if misplaced != nil {
		return misplaced
	}
	event := map[string]any{"event_id": "cli-" + uuid.NewString()}
	switch verb {
	case "pay":
		if *amount <= 0 {
			return f.fail("sandbox pay: --amount (fen, as the order says) is required")
		}
		if *trade == "" {
			*trade = "SBX-" + uuid.NewString()
		}
		event["type"], event["order_id"], event["trade_no"], event["amount_fen"] = "payment.succeeded", id, *trade, *amount
	case "fail":
		event["type"], event["order_id"], event["reason"] = "payment.failed", id, *reason
	case "refund":
		if *reason != "" && !*failed {
			return f.fail("sandbox refund: --reason goes with --failed")
		}
		event["type"], event["refund_id"] = "refund.succeeded", id
		if *failed {
			event["type"], event["reason"] = "refund.failed", *reason
		}
	}
	secret := os.Getenv("SANDBOX_WEBHOOK_SECRET")
	if secret == "" {
		return errors.New("SANDBOX_WEBHOOK_SECRET is required to sign sandbox webhooks")
	}
	body, _ := json.Marshal(event)
	ts := time.Now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *base+"/v1/webhooks/sandbox", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sandbox-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("X-Sandbox-Signature", sandbox.Sign(secret, ts, body))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	// The answer is printed whatever it says: a 200 is an acknowledgement,
	// not proof the event matched anything (see the usage).
	fmt.Fprintf(out, "sent %s\n%s %s\n", body, resp.Status, bytes.TrimSpace(answer))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
