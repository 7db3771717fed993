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
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/diamondd/diamondd/internal/channel/sandbox"
)

// sandboxCmd plays the sandbox channel from the command line: it signs and
// posts a webhook as the channel would.
//
//	diamondd sandbox pay ORDER_ID --amount 600 [--trade T-1] [--url http://localhost:8080]
//	diamondd sandbox fail ORDER_ID
//	diamondd sandbox refund REFUND_ID [--failed --reason "..."]
func sandboxCmd(ctx context.Context, args []string, out io.Writer) error {
	if len(args) < 2 {
		return errUsage
	}
	verb, id := args[0], args[1]
	fs := flag.NewFlagSet("sandbox", flag.ContinueOnError)
	amount := fs.Int64("amount", 0, "amount paid or refunded, in fen")
	trade := fs.String("trade", "", "channel trade number (default: a new one)")
	base := fs.String("url", "http://localhost:8080", "diamondd's base URL")
	failed := fs.Bool("failed", false, "refund: report the refund failed")
	reason := fs.String("reason", "", "failure reason")
	if err := fs.Parse(args[2:]); err != nil {
		return errUsage
	}
	secret := os.Getenv("SANDBOX_WEBHOOK_SECRET")
	if secret == "" {
		return errors.New("SANDBOX_WEBHOOK_SECRET is required to sign sandbox webhooks")
	}
	event := map[string]any{"event_id": "cli-" + uuid.NewString()}
	switch verb {
	case "pay":
		if *amount <= 0 {
			return errors.New("--amount (fen, as the order says) is required")
		}
		if *trade == "" {
			*trade = "SBX-" + uuid.NewString()
		}
		event["type"], event["order_id"], event["trade_no"], event["amount_fen"] = "payment.succeeded", id, *trade, *amount
	case "fail":
		event["type"], event["order_id"], event["reason"] = "payment.failed", id, *reason
	case "refund":
		event["type"], event["refund_id"] = "refund.succeeded", id
		if *failed {
			event["type"], event["reason"] = "refund.failed", *reason
		}
	default:
		return errUsage
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
	fmt.Fprintf(out, "sent %s\n%s %s\n", body, resp.Status, answer)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
