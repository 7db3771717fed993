package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/diamondd/diamondd/internal/httpapi/oapi"
	"github.com/diamondd/diamondd/internal/platform/postgres"
)

func (s *Server) Healthz(context.Context, oapi.HealthzRequestObject) (oapi.HealthzResponseObject, error) {
	return oapi.Healthz200JSONResponse{Status: "ok"}, nil
}

// Readyz is ready when the database answers and every migration is applied.
// Redis is reported but never makes the service unready: without it, rate
// limits fall back to per-process.
func (s *Server) Readyz(ctx context.Context, _ oapi.ReadyzRequestObject) (oapi.ReadyzResponseObject, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r := oapi.Readiness{Status: oapi.Ready, Database: "ok"}
	if err := s.Pool.Ping(ctx); err != nil {
		r.Status, r.Database = oapi.NotReady, "unreachable"
	} else if pending, err := postgres.Pending(ctx, s.Pool); err != nil || pending {
		r.Status, r.Database = oapi.NotReady, "migrations pending"
	}
	if s.Ready != nil {
		if st, ok := s.Ready(ctx)["redis"]; ok {
			r.Redis = &st
		}
	}
	if r.Status != oapi.Ready {
		return oapi.Readyz503JSONResponse(r), nil
	}
	return oapi.Readyz200JSONResponse(r), nil
}

// metricsResponse writes the registry in the Prometheus text format.
type metricsResponse struct{ s *Server }

func (m metricsResponse) VisitMetricsResponse(w http.ResponseWriter) error {
	families, err := m.s.Registry.Gather()
	if err != nil {
		return err
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) Metrics(context.Context, oapi.MetricsRequestObject) (oapi.MetricsResponseObject, error) {
	return metricsResponse{s}, nil
}
