package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/diamondd/diamondd/internal/channel/monthlypay"
	"github.com/diamondd/diamondd/internal/httpapi/oapi"
	"github.com/diamondd/diamondd/internal/platform/postgres"
	"github.com/diamondd/diamondd/internal/recharge"
	"github.com/diamondd/diamondd/internal/refund"
)

func actor(ctx context.Context) refund.Actor {
	p := principal(ctx)
	return refund.Actor{ID: p.Subject, Role: string(p.Role)}
}

func toEvidence(in *[]oapi.Evidence) []refund.Evidence {
	if in == nil {
		return nil
	}
	out := make([]refund.Evidence, 0, len(*in))
	for _, e := range *in {
		out = append(out, refund.Evidence{Kind: string(e.Kind), Value: e.Value})
	}
	return out
}

func (r stored) VisitCreateRefundResponse(w http.ResponseWriter) error      { return r.write(w) }
func (r stored) VisitCreateAdminRefundResponse(w http.ResponseWriter) error { return r.write(w) }

func (s *Server) CreateRefund(ctx context.Context, r oapi.CreateRefundRequestObject) (oapi.CreateRefundResponseObject, error) {
	body := *r.Body
	if r.Params.IdempotencyKey == nil || *r.Params.IdempotencyKey == "" {
		return nil, errKeyRequired
	}
	// A retry whose outcome is stored is never refused by the rate limit.
	if replay, err := s.rateLimitUnlessReplay(ctx, "refund", s.Limits.RefundPerMin, "/v1/refunds", *r.Params.IdempotencyKey, body); err != nil || replay != nil {
		return deref(replay), err
	}
	req := refund.Request{AmountFen: body.AmountFen, ReasonCode: string(body.ReasonCode),
		Description: deref(body.Description), Evidence: toEvidence(body.Evidence)}
	return s.createRefund(ctx, "/v1/refunds", deref(r.Params.IdempotencyKey), body, body.OrderId, req)
}

func (s *Server) CreateAdminRefund(ctx context.Context, r oapi.CreateAdminRefundRequestObject) (oapi.CreateAdminRefundResponseObject, error) {
	body := *r.Body
	req := refund.Request{AmountFen: body.AmountFen, ReasonCode: string(body.ReasonCode),
		Description: deref(body.Description), Evidence: toEvidence(body.Evidence), UserID: body.UserId,
		Clawback: refund.ClawbackUnspentOnly}
	if body.Clawback != nil {
		req.Clawback = string(*body.Clawback)
	}
	return s.createRefund(ctx, "/v1/admin/refunds", deref(r.Params.IdempotencyKey), body, body.OrderId, req)
}

// createRefund creates the refund of order (its id as the client sent it) in
// the key's transaction: the key is judged first, and a refusal is stored.
func (s *Server) createRefund(ctx context.Context, route, key string, body any, order string, req refund.Request) (stored, error) {
	var created refund.Refund
	out, err := s.idempotent(ctx, route, key, body, http.StatusCreated, func(ctx context.Context, tx pgx.Tx) (any, error) {
		var err error
		if req.OrderID, err = orderID(order); err != nil {
			return nil, err
		}
		created, err = s.Refunds.Create(ctx, tx, actor(ctx), req)
		if err != nil {
			return nil, err
		}
		tl, err := recharge.Timeline(ctx, tx, created.UserID, created.ID)
		if err != nil {
			return nil, err
		}
		return s.toRefund(created, tl, nil, false), nil
	})
	if err == nil && !out.replayed && created.Status == refund.StatusApproved {
		s.submit(ctx, created)
	}
	return out, err
}

// submit sends an approved refund to its channel right after its
// transaction commits. A failure is only logged: the refund worker submits
// whatever is left approved.
func (s *Server) submit(ctx context.Context, r refund.Refund) {
	if err := s.Refunds.Submit(context.WithoutCancel(ctx), r.UserID, r.ID); err != nil {
		s.log.WarnContext(ctx, "refund submission deferred to the worker", "refund", r.ID, "error", err)
	}
}

func (r stored) VisitReturnPaymentResponse(w http.ResponseWriter) error { return r.write(w) }

func (s *Server) ReturnPayment(ctx context.Context, r oapi.ReturnPaymentRequestObject) (oapi.ReturnPaymentResponseObject, error) {
	var created refund.Refund
	body := struct {
		Order   string `json:"order"`
		TradeNo string `json:"trade_no"`
		Note    string `json:"note"`
	}{r.Id, r.TradeNo, r.Body.Note}
	out, err := s.idempotent(ctx, "/v1/admin/recharges/:id/payments/:trade_no/return", deref(r.Params.IdempotencyKey), body,
		http.StatusCreated, func(ctx context.Context, tx pgx.Tx) (any, error) {
			id, err := orderID(r.Id)
			if err != nil {
				return nil, err
			}
			if created, err = s.Refunds.ReturnPayment(ctx, tx, actor(ctx), id, r.TradeNo, r.Body.Note); err != nil {
				return nil, err
			}
			tl, err := recharge.Timeline(ctx, tx, created.UserID, created.ID)
			if err != nil {
				return nil, err
			}
			return s.toRefund(created, tl, nil, true), nil
		})
	if err == nil && !out.replayed && created.Status == refund.StatusApproved {
		s.submit(ctx, created)
	}
	return out, err
}

func (s *Server) ListRefunds(ctx context.Context, r oapi.ListRefundsRequestObject) (oapi.ListRefundsResponseObject, error) {
	l, err := s.listRefunds(ctx, principal(ctx).Subject, r.Params.Limit, r.Params.Cursor)
	return oapi.ListRefunds200JSONResponse(l), err
}

func (s *Server) ListUserRefunds(ctx context.Context, r oapi.ListUserRefundsRequestObject) (oapi.ListUserRefundsResponseObject, error) {
	l, err := s.listRefunds(ctx, r.UserId, r.Params.Limit, r.Params.Cursor)
	return oapi.ListUserRefunds200JSONResponse(l), err
}

func (s *Server) listRefunds(ctx context.Context, userID string, limit *int, cursor *string) (oapi.RefundList, error) {
	after, err := decodeIDCursor(cursor)
	if err != nil {
		return oapi.RefundList{}, err
	}
	n := pageSize(limit)
	list, err := s.Refunds.List(ctx, userID, after, n+1)
	if err != nil {
		return oapi.RefundList{}, err
	}
	out := oapi.RefundList{Items: []oapi.Refund{}}
	for i, r := range list {
		if i == n {
			out.NextCursor = encodeIDCursor(list[n-1].ID)
			break
		}
		out.Items = append(out.Items, s.toRefund(r, nil, nil, false))
	}
	return out, nil
}

func (s *Server) GetRefund(ctx context.Context, r oapi.GetRefundRequestObject) (oapi.GetRefundResponseObject, error) {
	out, err := s.refundView(ctx, principal(ctx).Subject, r.Id, false)
	return oapi.GetRefund200JSONResponse(out), err
}

func (s *Server) GetAdminRefund(ctx context.Context, r oapi.GetAdminRefundRequestObject) (oapi.GetAdminRefundResponseObject, error) {
	out, err := s.refundView(ctx, "", r.Id, true)
	return oapi.GetAdminRefund200JSONResponse(out), err
}

// refundView reads a refund with its timeline (and, for support, its
// order's flags).
func (s *Server) refundView(ctx context.Context, userID, rawID string, admin bool) (oapi.Refund, error) {
	id, err := refundID(rawID)
	if err != nil {
		return oapi.Refund{}, err
	}
	r, err := s.Refunds.Get(ctx, userID, id)
	if err != nil {
		return oapi.Refund{}, err
	}
	return s.refundDetail(ctx, r, admin)
}

func (s *Server) refundDetail(ctx context.Context, r refund.Refund, admin bool) (oapi.Refund, error) {
	tl, err := recharge.Timeline(ctx, s.Pool, r.UserID, r.ID)
	if err != nil {
		return oapi.Refund{}, err
	}
	var order *recharge.Order
	if admin {
		o, err := s.Recharges.Get(ctx, "", r.OrderID)
		if err != nil {
			return oapi.Refund{}, err
		}
		order = &o
	}
	return s.toRefund(r, tl, order, admin), nil
}

func (s *Server) toRefund(r refund.Refund, tl []recharge.TimelineEntry, order *recharge.Order, admin bool) oapi.Refund {
	ev := make([]oapi.Evidence, 0, len(r.Evidence))
	for _, e := range r.Evidence {
		ev = append(ev, oapi.Evidence{Kind: oapi.EvidenceKind(e.Kind), Value: e.Value})
	}
	out := oapi.Refund{
		Id: r.ID, OrderId: r.OrderID, Status: oapi.RefundStatus(r.Status), Kind: oapi.RefundKind(r.Kind),
		AmountFen: r.AmountFen, Diamonds: r.Diamonds, Held: &r.Held, Clawback: oapi.RefundClawback(r.Clawback),
		ReasonCode: r.ReasonCode, Description: &r.Description, Evidence: ev, AutoApproved: r.AutoApproved,
		Resubmissions: r.Resubmissions, SlaDeadline: utc(r.SLADeadline), Overdue: s.Refunds.Overdue(r),
		DecidedBy: r.DecidedBy, FailureReason: r.FailureReason, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
	if tl != nil {
		entries := toTimeline(tl)
		out.Timeline = &entries
	}
	if admin {
		out.UserId, out.CreatedBy = &r.UserID, &r.CreatedBy
		if order != nil {
			flags := order.Flags
			if flags == nil {
				flags = []string{}
			}
			out.OrderFlags = &flags
			out.OrderRisk = toRisk(order.Risk)
		}
	}
	return out
}

func (s *Server) ListAdminRefunds(ctx context.Context, r oapi.ListAdminRefundsRequestObject) (oapi.ListAdminRefundsResponseObject, error) {
	status := ""
	if r.Params.Status != nil {
		status = string(*r.Params.Status)
	}
	after, err := queueCursor(r.Params.Cursor, status)
	if err != nil {
		return nil, err
	}
	n := pageSize(r.Params.Limit)
	list, err := s.Refunds.Queue(ctx, status, after, n+1)
	if err != nil {
		return nil, err
	}
	out := oapi.RefundList{Items: []oapi.Refund{}}
	for i, rf := range list {
		if i == n {
			out.NextCursor = encodeQueueCursor(list[n-1], status)
			break
		}
		o, err := s.Recharges.Get(ctx, "", rf.OrderID)
		if err != nil {
			return nil, err
		}
		out.Items = append(out.Items, s.toRefund(rf, nil, &o, true))
	}
	return oapi.ListAdminRefunds200JSONResponse(out), nil
}

// The review queue is keyed by (priority, sla_deadline, id), the other
// refund listings by (created_at, id): each has its own cursor tag.
func encodeQueueCursor(r refund.Refund, status string) *string {
	if status == refund.StatusPendingReview {
		deadline := ""
		if r.SLADeadline != nil {
			deadline = keyTime(*r.SLADeadline)
		}
		return encodeKey("q", strconv.Itoa(r.Priority), deadline, r.ID.String())
	}
	return encodeTimeKey("r", r.CreatedAt, r.ID)
}

func queueCursor(c *string, status string) (*refund.QueueCursor, error) {
	if status == refund.StatusPendingReview {
		f, err := decodeKey(c, "q", 3)
		if f == nil || err != nil {
			return nil, err
		}
		priority, err1 := strconv.ParseInt(f[0], 10, 32)
		id, err2 := uuid.Parse(f[2])
		if err1 != nil || err2 != nil {
			return nil, errInvalidCursor()
		}
		out := &refund.QueueCursor{Priority: int(priority), ID: id}
		if f[1] != "" {
			deadline, ok := parseKeyTime(f[1])
			if !ok {
				return nil, errInvalidCursor()
			}
			out.SLADeadline = &deadline
		}
		return out, nil
	}
	at, id, ok, err := decodeTimeKey(c, "r")
	if !ok {
		return nil, err
	}
	return &refund.QueueCursor{CreatedAt: at, ID: id}, nil
}

// refundAction runs a support or user action on a refund in a transaction
// and answers the refund as it now stands.
func (s *Server) refundAction(ctx context.Context, admin bool, rawID string, act func(tx pgx.Tx, id uuid.UUID) (refund.Refund, error)) (oapi.Refund, error) {
	id, err := refundID(rawID)
	if err != nil {
		return oapi.Refund{}, err
	}
	var r refund.Refund
	err = postgres.WithTx(ctx, s.Pool, func(tx pgx.Tx) error {
		var err error
		r, err = act(tx, id)
		return err
	})
	if err != nil {
		return oapi.Refund{}, err
	}
	if r.Status == refund.StatusApproved {
		s.submit(ctx, r)
		if fresh, err := s.Refunds.Get(ctx, "", r.ID); err == nil {
			r = fresh
		}
	}
	return s.refundDetail(ctx, r, admin)
}

func (s *Server) ApproveRefund(ctx context.Context, r oapi.ApproveRefundRequestObject) (oapi.ApproveRefundResponseObject, error) {
	out, err := s.refundAction(ctx, true, r.Id, func(tx pgx.Tx, id uuid.UUID) (refund.Refund, error) {
		return s.Refunds.Approve(ctx, tx, actor(ctx), id, r.Body.Note)
	})
	return oapi.ApproveRefund200JSONResponse(out), err
}

func (s *Server) RejectRefund(ctx context.Context, r oapi.RejectRefundRequestObject) (oapi.RejectRefundResponseObject, error) {
	out, err := s.refundAction(ctx, true, r.Id, func(tx pgx.Tx, id uuid.UUID) (refund.Refund, error) {
		return s.Refunds.Reject(ctx, tx, actor(ctx), id, r.Body.Note, r.Body.ReasonCode)
	})
	return oapi.RejectRefund200JSONResponse(out), err
}

func (s *Server) CancelRefund(ctx context.Context, r oapi.CancelRefundRequestObject) (oapi.CancelRefundResponseObject, error) {
	out, err := s.refundAction(ctx, false, r.Id, func(tx pgx.Tx, id uuid.UUID) (refund.Refund, error) {
		return s.Refunds.Cancel(ctx, tx, actor(ctx), id)
	})
	return oapi.CancelRefund200JSONResponse(out), err
}

func (s *Server) AddRefundEvidence(ctx context.Context, r oapi.AddRefundEvidenceRequestObject) (oapi.AddRefundEvidenceResponseObject, error) {
	out, err := s.refundAction(ctx, false, r.Id, func(tx pgx.Tx, id uuid.UUID) (refund.Refund, error) {
		return s.Refunds.AddEvidence(ctx, tx, actor(ctx), id, toEvidence(&r.Body.Evidence))
	})
	return oapi.AddRefundEvidence200JSONResponse(out), err
}

func (s *Server) SetCreditLine(ctx context.Context, r oapi.SetCreditLineRequestObject) (oapi.SetCreditLineResponseObject, error) {
	var line monthlypay.Line
	err := postgres.WithTx(ctx, s.Pool, func(tx pgx.Tx) error {
		before, existed, after, err := monthlypay.Set(ctx, tx, r.UserId, r.Body.LimitFen, string(r.Body.Status), s.Now().UTC())
		if err != nil {
			return err
		}
		line = after
		was := ""
		if existed {
			was = fmt.Sprintf("%s limit=%d used=%d", before.Status, before.LimitFen, before.UsedFen)
		}
		return s.Refunds.Audit(ctx, tx, actor(ctx), "credit_line.set", "credit_line", r.UserId, r.UserId, was,
			fmt.Sprintf("%s limit=%d used=%d", after.Status, after.LimitFen, after.UsedFen), "")
	})
	if err != nil {
		return nil, err
	}
	return oapi.SetCreditLine200JSONResponse{UserId: line.UserID, LimitFen: line.LimitFen, UsedFen: line.UsedFen,
		AvailableFen: max(line.LimitFen-line.UsedFen, 0), Status: oapi.CreditLineStatus(line.Status), UpdatedAt: line.UpdatedAt.UTC()}, nil
}

func (s *Server) ListAudit(ctx context.Context, r oapi.ListAuditRequestObject) (oapi.ListAuditResponseObject, error) {
	after, err := auditCursor(r.Params.Cursor)
	if err != nil {
		return nil, err
	}
	n := pageSize(r.Params.Limit)
	list, err := s.Refunds.AuditLog(ctx, after, n+1)
	if err != nil {
		return nil, err
	}
	out := oapi.AuditList{Items: []oapi.AuditEntry{}}
	for i, e := range list {
		if i == n {
			out.NextCursor = encodeTimeKey("a", list[n-1].At, list[n-1].ID)
			break
		}
		out.Items = append(out.Items, oapi.AuditEntry{Id: e.ID, Actor: e.Actor, ActorRole: e.ActorRole, Action: e.Action,
			ObjectType: e.ObjectType, ObjectId: e.ObjectID, UserId: e.UserID, Before: e.Before, After: e.After,
			Note: e.Note, At: e.At.UTC()})
	}
	return oapi.ListAudit200JSONResponse(out), nil
}

func auditCursor(c *string) (*refund.AuditCursor, error) {
	at, id, ok, err := decodeTimeKey(c, "a")
	if !ok {
		return nil, err
	}
	return &refund.AuditCursor{At: at, ID: id}, nil
}
