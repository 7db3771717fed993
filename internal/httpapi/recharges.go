package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/fault"
	"github.com/diamondd/diamondd/internal/httpapi/oapi"
	"github.com/diamondd/diamondd/internal/idempotency"
	"github.com/diamondd/diamondd/internal/platform/redisx"
	"github.com/diamondd/diamondd/internal/recharge"
	"github.com/diamondd/diamondd/internal/risk"
)

func (s *Server) ListPackages(context.Context, oapi.ListPackagesRequestObject) (oapi.ListPackagesResponseObject, error) {
	pkgs := s.Recharges.Packages()
	out := make(oapi.ListPackages200JSONResponse, 0, len(pkgs))
	for _, p := range pkgs {
		out = append(out, oapi.Package{Id: p.ID, Diamonds: p.Diamonds, AmountFen: p.AmountFen, Label: p.Label})
	}
	return out, nil
}

func (s *Server) ListChannels(ctx context.Context, r oapi.ListChannelsRequestObject) (oapi.ListChannelsResponseObject, error) {
	list, err := s.Recharges.Eligibility(ctx, payer(ctx), deref(r.Params.AmountFen))
	if err != nil {
		return nil, err
	}
	out := make(oapi.ListChannels200JSONResponse, 0, len(list))
	for _, e := range list {
		item := oapi.ChannelEligibility{Channel: e.Channel, Available: e.Available}
		if !e.Available {
			code := oapi.ChannelEligibilityReasonCode(e.ReasonCode)
			item.ReasonCode, item.Reason = &code, &e.Reason
		}
		out = append(out, item)
	}
	return out, nil
}

func payer(ctx context.Context) recharge.Payer {
	p := principal(ctx)
	return recharge.Payer{UserID: p.Subject, Birthdate: p.Birthdate}
}

var errKeyRequired = fault.New(fault.Invalid, "idempotency_key_required", "this request needs an Idempotency-Key header")

// rateLimitUnlessReplay applies the caller's limit for an action, except to
// a retry of a request whose outcome is stored: only a refused request pays
// for the look-up.
func (s *Server) rateLimitUnlessReplay(ctx context.Context, action string, perMinute int, route, key string, body any) (*stored, error) {
	limited := s.rateLimit(ctx, action, perMinute)
	if limited == nil {
		return nil, nil
	}
	if replay, err := s.lookup(ctx, route, key, body); err != nil || replay != nil {
		return replay, err
	}
	return nil, limited
}

// rateLimit refuses a request over the caller's limit for an action.
func (s *Server) rateLimit(ctx context.Context, action string, perMinute int) error {
	if perMinute <= 0 || s.Limiter == nil {
		return nil
	}
	d := s.Limiter.Allow(ctx, action+":"+principal(ctx).Subject, redisx.Limit{PerMinute: perMinute, Burst: perMinute})
	if d.Allowed {
		return nil
	}
	return fault.New(fault.RateLimited, "rate_limited", "too many %s requests; retry in %d s", action, d.RetryAfterSeconds()).
		With("retry_after_seconds", d.RetryAfterSeconds())
}

func (r stored) VisitCreateRechargeResponse(w http.ResponseWriter) error { return r.write(w) }

func (s *Server) CreateRecharge(ctx context.Context, r oapi.CreateRechargeRequestObject) (oapi.CreateRechargeResponseObject, error) {
	body := *r.Body
	key := deref(r.Params.IdempotencyKey)
	if key == "" {
		return nil, errKeyRequired
	}
	// A retry is answered from its stored record before a channel that
	// prepares remotely is asked again (for the others the transaction's own
	// look-up answers it), and is never refused by the rate limit.
	if s.Recharges.PreparesRemotely(body.Channel) {
		if replay, err := s.lookup(ctx, "/v1/recharges", key, body); err != nil || replay != nil {
			return deref(replay), err
		}
	}
	if replay, err := s.rateLimitUnlessReplay(ctx, "recharge", s.Limits.RechargePerMin, "/v1/recharges", key, body); err != nil || replay != nil {
		return deref(replay), err
	}
	var draft recharge.Draft
	var err error
	if (body.PackageId == nil) == (body.AmountFen == nil) {
		err = fault.New(fault.Invalid, "validation_failed", "give exactly one of package_id and amount_fen")
	} else {
		draft, err = s.Recharges.Prepare(ctx, payer(ctx), recharge.CreateRequest{
			Channel: body.Channel, PackageID: deref(body.PackageId), AmountFen: deref(body.AmountFen)})
	}
	if fe, ok := fault.As(err); ok && problemFor(fe).status < 500 {
		// A refusal is an outcome like any other: stored under the key, so
		// the same request gets the same answer.
		return s.idempotent(ctx, "/v1/recharges", key, body, http.StatusCreated,
			func(context.Context, pgx.Tx) (any, error) { return nil, err })
	}
	if err != nil {
		return nil, err
	}
	// Most orders are known in full before they are stored: the order, its
	// response and the key's record then go in one round trip.
	if o, queue, ok, err := s.Recharges.InsertLater(draft); err != nil {
		return nil, err
	} else if ok {
		return s.once(ctx, "/v1/recharges", key, body, http.StatusCreated, toRecharge(o, nil, false), queue)
	}
	return s.idempotent(ctx, "/v1/recharges", key, body, http.StatusCreated,
		func(ctx context.Context, tx pgx.Tx) (any, error) {
			o, err := s.Recharges.Insert(ctx, tx, draft)
			if err != nil {
				return nil, err
			}
			return toRecharge(o, nil, false), nil
		})
}

func (s *Server) ListRecharges(ctx context.Context, r oapi.ListRechargesRequestObject) (oapi.ListRechargesResponseObject, error) {
	l, err := s.listRecharges(ctx, principal(ctx).Subject, r.Params.Limit, r.Params.Cursor)
	return oapi.ListRecharges200JSONResponse(l), err
}

func (s *Server) ListUserRecharges(ctx context.Context, r oapi.ListUserRechargesRequestObject) (oapi.ListUserRechargesResponseObject, error) {
	l, err := s.listRecharges(ctx, r.UserId, r.Params.Limit, r.Params.Cursor)
	return oapi.ListUserRecharges200JSONResponse(l), err
}

func (s *Server) listRecharges(ctx context.Context, userID string, limit *int, cursor *string) (oapi.RechargeList, error) {
	after, err := decodeIDCursor(cursor)
	if err != nil {
		return oapi.RechargeList{}, err
	}
	n := pageSize(limit)
	orders, err := s.Recharges.List(ctx, userID, after, n+1)
	if err != nil {
		return oapi.RechargeList{}, err
	}
	out := oapi.RechargeList{Items: []oapi.Recharge{}}
	for i, o := range orders {
		if i == n {
			out.NextCursor = encodeIDCursor(orders[n-1].ID)
			break
		}
		out.Items = append(out.Items, toRecharge(o, nil, false))
	}
	return out, nil
}

// orderID and refundID read an id a client sent. Ids are opaque (API.md):
// one this API could not have issued (anything but the canonical form of
// the UUIDs it hands out) names nothing, so it is not found.
func orderID(s string) (uuid.UUID, error) { return issuedID(s, "recharge order") }

func refundID(s string) (uuid.UUID, error) { return issuedID(s, "refund") }

func issuedID(s, what string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || id.String() != s { // uuid.Parse also takes braces, urn: and bare hex
		return uuid.Nil, fault.New(fault.NotFound, "not_found", "no such %s", what)
	}
	return id, nil
}

func (s *Server) GetRecharge(ctx context.Context, r oapi.GetRechargeRequestObject) (oapi.GetRechargeResponseObject, error) {
	id, err := orderID(r.Id)
	if err != nil {
		return nil, err
	}
	o, err := s.Recharges.Get(ctx, principal(ctx).Subject, id)
	if err != nil {
		return nil, err
	}
	tl, err := recharge.Timeline(ctx, s.Pool, o.UserID, o.ID)
	if err != nil {
		return nil, err
	}
	return oapi.GetRecharge200JSONResponse(toRecharge(o, tl, false)), nil
}

func (s *Server) GetAdminRecharge(ctx context.Context, r oapi.GetAdminRechargeRequestObject) (oapi.GetAdminRechargeResponseObject, error) {
	id, err := orderID(r.Id)
	if err != nil {
		return nil, err
	}
	o, err := s.Recharges.Get(ctx, "", id)
	if err != nil {
		return nil, err
	}
	tl, err := recharge.Timeline(ctx, s.Pool, o.UserID, o.ID)
	if err != nil {
		return nil, err
	}
	pays, err := recharge.Payments(ctx, s.Pool, o.UserID, o.ID)
	if err != nil {
		return nil, err
	}
	out := toRecharge(o, tl, true)
	ps := make([]oapi.ChannelPayment, 0, len(pays))
	for _, p := range pays {
		cp := oapi.ChannelPayment{Channel: p.Channel, TradeNo: p.TradeNo, AmountFen: p.AmountFen,
			Outcome: oapi.ChannelPaymentOutcome(p.Outcome), CreatedAt: p.CreatedAt}
		cp.RefundId = p.RefundID
		ps = append(ps, cp)
	}
	out.Payments = &ps
	return oapi.GetAdminRecharge200JSONResponse(out), nil
}

func (s *Server) CancelRecharge(ctx context.Context, r oapi.CancelRechargeRequestObject) (oapi.CancelRechargeResponseObject, error) {
	id, err := orderID(r.Id)
	if err != nil {
		return nil, err
	}
	o, err := s.Recharges.Cancel(ctx, principal(ctx).Subject, id)
	if err != nil {
		return nil, err
	}
	tl, err := recharge.Timeline(ctx, s.Pool, o.UserID, o.ID)
	if err != nil {
		return nil, err
	}
	return oapi.CancelRecharge200JSONResponse(toRecharge(o, tl, false)), nil
}

func (s *Server) ListRiskFlags(ctx context.Context, r oapi.ListRiskFlagsRequestObject) (oapi.ListRiskFlagsResponseObject, error) {
	after, err := flaggedCursor(r.Params.Cursor)
	if err != nil {
		return nil, err
	}
	n := pageSize(r.Params.Limit)
	code := ""
	if r.Params.Reason != nil {
		code = string(*r.Params.Reason)
	}
	orders, err := s.Recharges.Flagged(ctx, code, after, n+1)
	if err != nil {
		return nil, err
	}
	out := oapi.RechargeList{Items: []oapi.Recharge{}}
	for i, o := range orders {
		if i == n {
			out.NextCursor = encodeTimeKey("f", deref(orders[n-1].PaidAt), orders[n-1].ID)
			break
		}
		out.Items = append(out.Items, toRecharge(o, nil, true))
	}
	return oapi.ListRiskFlags200JSONResponse(out), nil
}

func toRecharge(o recharge.Order, tl []recharge.TimelineEntry, admin bool) oapi.Recharge {
	out := oapi.Recharge{
		Id: o.ID, Status: oapi.RechargeStatus(o.Status), Channel: o.Channel, PackageId: o.PackageID,
		AmountFen: o.AmountFen, Diamonds: o.Diamonds, ExpiresAt: o.ExpiresAt.UTC(), CreatedAt: o.CreatedAt.UTC(),
		PaidAt: utc(o.PaidAt), ClosedAt: utc(o.ClosedAt), Pay: o.Pay, Flags: o.Flags,
	}
	if out.Pay == nil {
		out.Pay = map[string]any{}
	}
	if out.Flags == nil {
		out.Flags = []string{}
	}
	if tl != nil {
		entries := toTimeline(tl)
		out.Timeline = &entries
	}
	if admin {
		out.UserId, out.TradeNo, out.Minor = &o.UserID, o.TradeNo, &o.Minor
		out.Risk = toRisk(o.Risk)
	}
	return out
}

func toRisk(raw json.RawMessage) *oapi.Risk {
	if len(raw) == 0 {
		return nil
	}
	var a risk.Assessment
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil
	}
	r := oapi.Risk{Score: a.Score, Flags: make([]oapi.RiskFlag, 0, len(a.Flags))}
	for _, f := range a.Flags {
		rf := oapi.RiskFlag{Code: oapi.RiskFlagCode(f.Code), Score: f.Score}
		if f.Evidence != nil {
			ev := f.Evidence
			rf.Evidence = &ev
		}
		r.Flags = append(r.Flags, rf)
	}
	return &r
}

func toTimeline(tl []recharge.TimelineEntry) []oapi.TimelineEntry {
	out := make([]oapi.TimelineEntry, 0, len(tl))
	for _, e := range tl {
		out = append(out, oapi.TimelineEntry{Status: e.Status, At: e.At.UTC(), Actor: e.Actor, Note: e.Note})
	}
	return out
}

// lookup answers a request from its stored idempotency record, if any.
func (s *Server) lookup(ctx context.Context, route, key string, body any) (*stored, error) {
	if key == "" {
		return nil, fault.New(fault.Invalid, "idempotency_key_required", "this request needs an Idempotency-Key header")
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	hash, err := idempotency.Hash(raw)
	if err != nil {
		return nil, err
	}
	out, err := idempotency.Lookup(ctx, s.Pool, idempotency.Scope{Principal: principal(ctx).Subject,
		Method: http.MethodPost, Route: route, Key: key}, hash)
	if err != nil || out == nil {
		return nil, err
	}
	return &stored{out: *out, replayed: true}, nil
}

// webhookResponse is a channel's own acknowledgement.
type webhookResponse channel.Response

func (r webhookResponse) VisitReceiveWebhookResponse(w http.ResponseWriter) error {
	if r.Code != "" {
		return newProblem(r.Status, r.Code, r.Detail).write(w)
	}
	if r.ContentType != "" {
		w.Header().Set("Content-Type", r.ContentType)
	}
	w.WriteHeader(r.Status)
	_, err := w.Write(r.Body)
	return err
}

// ReceiveWebhook verifies a notification on its raw body before anything
// else, then applies each event it carries. A failure to apply answers the
// channel's error so that it redelivers.
func (s *Server) ReceiveWebhook(ctx context.Context, r oapi.ReceiveWebhookRequestObject) (oapi.ReceiveWebhookResponseObject, error) {
	ch, err := s.Channels.Get(r.Channel)
	if err != nil {
		return nil, fault.New(fault.NotFound, "not_found", "no channel %q is configured", r.Channel)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	events, err := ch.ParseWebhook(ctx, requestHeader(ctx), body)
	if err != nil {
		s.log.WarnContext(ctx, "webhook refused", "channel", r.Channel, "error", err)
		return webhookResponse(ch.WebhookResponse(err)), nil
	}
	for _, ev := range events {
		switch ev.Type {
		case channel.EventRefundSucceeded, channel.EventRefundFailed:
			err = s.Refunds.HandleEvent(ctx, r.Channel, ev)
		default:
			err = s.Recharges.HandleEvent(ctx, r.Channel, ev)
		}
		if err != nil {
			s.log.ErrorContext(ctx, "webhook event failed", "channel", r.Channel, "event", ev.Key, "error", err)
			return webhookResponse(ch.WebhookResponse(err)), nil
		}
	}
	return webhookResponse(ch.WebhookResponse(nil)), nil
}

func encodeIDCursor(id uuid.UUID) *string {
	s := base64.RawURLEncoding.EncodeToString(id[:])
	return &s
}

func decodeIDCursor(c *string) (*uuid.UUID, error) {
	if c == nil || *c == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(*c)
	if err != nil || len(raw) != 16 {
		return nil, fault.New(fault.Invalid, "invalid_cursor", "the cursor is not one this API returned")
	}
	id := uuid.UUID(raw)
	return &id, nil
}

// The support lists page by the sort key of a page's last row, written as
// "tag:field:..." in base64; the tag tells one list's cursors from
// another's. Keys rather than offsets: a row that leaves a list between two
// reads (a refund decided from the review queue) or joins it (a new audit
// entry) must make the next page neither skip nor repeat one.
func encodeKey(tag string, fields ...string) *string {
	s := base64.RawURLEncoding.EncodeToString([]byte(strings.Join(append([]string{tag}, fields...), ":")))
	return &s
}

// decodeKey reads the n fields of a cursor encodeKey wrote under tag; nil
// when there is no cursor.
func decodeKey(c *string, tag string, n int) ([]string, error) {
	if c == nil || *c == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(*c)
	fields := strings.Split(string(raw), ":")
	if err != nil || len(fields) != n+1 || fields[0] != tag {
		return nil, errInvalidCursor()
	}
	return fields[1:], nil
}

func errInvalidCursor() error {
	return fault.New(fault.Invalid, "invalid_cursor", "the cursor is not one this API returned")
}

// keyTime writes a time of a sort key to the microsecond, PostgreSQL's
// precision, so that the row it came from compares equal to it.
func keyTime(t time.Time) string { return strconv.FormatInt(t.UnixMicro(), 10) }

// parseKeyTime reads a keyTime, refusing one PostgreSQL could not compare.
func parseKeyTime(s string) (time.Time, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	t := time.UnixMicro(n).UTC()
	return t, err == nil && t.Year() >= 1 && t.Year() <= 9999
}

// encodeTimeKey and decodeTimeKey write and read the cursor of a list
// newest first by (time, id).
func encodeTimeKey(tag string, at time.Time, id uuid.UUID) *string {
	return encodeKey(tag, keyTime(at), id.String())
}

func decodeTimeKey(c *string, tag string) (at time.Time, id uuid.UUID, ok bool, err error) {
	f, err := decodeKey(c, tag, 2)
	if f == nil || err != nil {
		return at, id, false, err
	}
	at, ok = parseKeyTime(f[0])
	id, err = uuid.Parse(f[1])
	if !ok || err != nil {
		return at, id, false, errInvalidCursor()
	}
	return at, id, true, nil
}

func flaggedCursor(c *string) (*recharge.FlaggedCursor, error) {
	at, id, ok, err := decodeTimeKey(c, "f")
	if !ok {
		return nil, err
	}
	return &recharge.FlaggedCursor{PaidAt: at, ID: id}, nil
}
