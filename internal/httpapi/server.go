// Package httpapi is the HTTP layer: the echo server generated from
// openapi/openapi.yaml (package oapi), the handlers that convert between the
// API's types and the domain's, the middleware, and the one mapping from
// errors to RFC 9457 problems.
package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo-contrib/echoprometheus"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	echomiddleware "github.com/oapi-codegen/echo-middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/diamondd/diamondd/internal/auth"
	"github.com/diamondd/diamondd/internal/channel"
	"github.com/diamondd/diamondd/internal/httpapi/oapi"
	"github.com/diamondd/diamondd/internal/ledger"
	"github.com/diamondd/diamondd/internal/platform/redisx"
	"github.com/diamondd/diamondd/internal/recharge"
	"github.com/diamondd/diamondd/internal/refund"
	"github.com/diamondd/diamondd/internal/spend"
)

// Deps is everything the handlers use, built in main.
type Deps struct {
	Pool      *pgxpool.Pool
	Ledger    *ledger.Ledger
	Spends    *spend.Service
	Recharges *recharge.Service
	Refunds   *refund.Service
	Channels  *channel.Registry
	Limiter   *redisx.Limiter
	Limits    Limits
	Verifier  *auth.Verifier
	Log       *slog.Logger
	Registry  *prometheus.Registry
	Now       func() time.Time
	// Ready reports the readiness of dependencies beyond the database
	// (Redis); nil means there are none.
	Ready func(ctx context.Context) map[string]string
	// ValidateResponses checks every response against the spec and turns a
	// mismatch into a 500 (tests and development: it buffers responses).
	ValidateResponses bool
}

// Limits are the per-user rate limits (per minute; 0 is off).
type Limits struct {
	RechargePerMin int
	RefundPerMin   int
}

// Server implements the generated strict server interface.
type Server struct {
	Deps
	log *slog.Logger
}

var _ oapi.StrictServerInterface = (*Server)(nil)

// New builds the echo instance with every route of the spec.
func New(d Deps) (*echo.Echo, error) {
	spec, err := oapi.GetSwagger()
	if err != nil {
		return nil, fmt.Errorf("load embedded spec: %w", err)
	}
	spec.Servers = nil // no Host matching: the service runs under any name
	roles, err := rolesByRoute(spec)
	if err != nil {
		return nil, err
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Server{Deps: d, log: d.Log}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		Generator: func() string { return uuid.Must(uuid.NewV7()).String() },
	}))
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			ctx := context.WithValue(req.Context(), requestIDKey{}, requestID(c))
			ctx = context.WithValue(ctx, headerKey{}, req.Header)
			c.SetRequest(req.WithContext(ctx))
			return next(c)
		}
	})
	e.Use(middleware.Recover())
	e.Use(echoprometheus.NewMiddlewareWithConfig(echoprometheus.MiddlewareConfig{
		Namespace: "diamondd", Subsystem: "http", Registerer: d.Registry,
		// An unknown path must not become a new label value per request.
		LabelFuncs: map[string]echoprometheus.LabelValueFunc{
			"url": func(c echo.Context, err error) string { return c.Path() },
		},
	}))
	e.Use(middleware.BodyLimit("64KiB")) // API.md: over 64 KiB is 413 ("64K" would be 64 000 bytes)
	e.Use(s.authenticate(roles))
	e.Use(checkInput)
	if d.ValidateResponses {
		router, err := gorillamux.NewRouter(spec)
		if err != nil {
			return nil, fmt.Errorf("spec router: %w", err)
		}
		e.Use(validateResponses(router))
	}
	e.Use(echomiddleware.OapiRequestValidatorWithOptions(spec, &echomiddleware.Options{
		Options: openapi3filter.Options{
			// authenticate already checked the token and the role.
			AuthenticationFunc: func(context.Context, *openapi3filter.AuthenticationInput) error { return nil },
			// Hand the handler the value that was validated, not a second decode.
			KeepValidatedValue: true,
			MultiError:         true,
		},
		DoNotValidateServers: true,
		// Webhooks are verified on their raw body by the channel before
		// anything parses them.
		Skipper: func(c echo.Context) bool { return strings.HasPrefix(c.Path(), "/v1/webhooks/") },
		ErrorHandler: func(c echo.Context, err *echo.HTTPError) error {
			return err
		},
		MultiErrorHandler: func(me openapi3.MultiError) *echo.HTTPError {
			return &echo.HTTPError{Code: validationStatus(me), Message: validationDetail(me), Internal: me}
		},
	}))
	oapi.RegisterHandlers(e, oapi.NewStrictHandler(s, nil))
	return e, nil
}

// validationStatus is 415 for a body of a media type the operation does not
// take (kin-openapi's own error encoder tells it by the same reason prefix),
// 400 for anything else.
func validationStatus(me openapi3.MultiError) int {
	for _, err := range me {
		var re *openapi3filter.RequestError
		if errors.As(err, &re) && strings.HasPrefix(re.Reason, "header Content-Type has unexpected value") {
			return http.StatusUnsupportedMediaType
		}
	}
	return http.StatusBadRequest
}

// validationDetail keeps the first line of each validation error: the rest
// of kin-openapi's message repeats the schema.
func validationDetail(me openapi3.MultiError) string {
	parts := make([]string, 0, len(me))
	for _, err := range me {
		line, _, _ := strings.Cut(err.Error(), "\n")
		parts = append(parts, line)
	}
	return strings.Join(parts, "; ")
}

type principalKey struct{}

type headerKey struct{}

// requestHeader is the request's headers (webhooks verify some of them).
func requestHeader(ctx context.Context) http.Header {
	h, _ := ctx.Value(headerKey{}).(http.Header)
	return h
}

// principal is the authenticated caller of a request.
func principal(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return p
}

// rolesByRoute reads each operation's x-roles from the spec, keyed the way
// echo names routes ("GET /v1/admin/users/:user_id/wallet").
func rolesByRoute(spec *openapi3.T) (map[string][]auth.Role, error) {
	out := map[string][]auth.Role{}
	for path, item := range spec.Paths.Map() {
		echoPath := strings.NewReplacer("{", ":", "}", "").Replace(path)
		for method, op := range item.Operations() {
			raw, ok := op.Extensions["x-roles"]
			if !ok {
				continue
			}
			list, ok := raw.([]any)
			if !ok {
				return nil, fmt.Errorf("spec: x-roles of %s %s is not a list", method, path)
			}
			for _, r := range list {
				name, _ := r.(string)
				out[method+" "+echoPath] = append(out[method+" "+echoPath], auth.Role(name))
			}
		}
	}
	return out, nil
}

// authenticate checks the bearer token and the role the spec asks for, before
// anything else looks at the request: 401 without a valid token, 403 with the
// wrong role.
func (s *Server) authenticate(roles map[string][]auth.Role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			allowed, ok := roles[c.Request().Method+" "+c.Path()]
			if !ok {
				return next(c)
			}
			// The scheme is case-insensitive (RFC 9110 §11.1).
			scheme, token, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
			token = strings.TrimSpace(token)
			if !strings.EqualFold(scheme, "Bearer") || token == "" {
				return auth.ErrUnauthenticated
			}
			p, err := s.Verifier.Verify(token)
			if err != nil {
				return err
			}
			if !slices.Contains(allowed, p.Role) {
				return echo.NewHTTPError(http.StatusForbidden, fmt.Sprintf("role %s may not call this endpoint", p.Role))
			}
			req := c.Request()
			c.SetRequest(req.WithContext(context.WithValue(req.Context(), principalKey{}, p)))
			return next(c)
		}
	}
}

// validateResponses buffers each response and checks it against the spec, so
// a handler that drifts from the spec fails loudly in tests.
func validateResponses(router routers.Router) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			route, params, err := router.FindRoute(c.Request())
			if err != nil {
				return next(c)
			}
			orig := c.Response().Writer
			rec := &recorder{header: orig.Header().Clone()}
			c.Response().Writer = rec
			herr := next(c)
			if herr != nil {
				c.Echo().HTTPErrorHandler(herr, c)
			}
			c.Response().Writer = orig
			in := &openapi3filter.ResponseValidationInput{
				RequestValidationInput: &openapi3filter.RequestValidationInput{
					Request: c.Request(), PathParams: params, Route: route,
					Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
				},
				Status: rec.status, Header: rec.header, Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())),
				Options: &openapi3filter.Options{IncludeResponseStatus: true},
			}
			if err := openapi3filter.ValidateResponse(c.Request().Context(), in); err != nil {
				line, _, _ := strings.Cut(err.Error(), "\n")
				msg := fmt.Sprintf("response of %s %s (status %d) does not match the spec: %s; body: %s",
					c.Request().Method, c.Path(), rec.status, line, rec.body.String())
				orig.Header().Set("Content-Type", "text/plain")
				orig.WriteHeader(http.StatusInternalServerError)
				_, _ = orig.Write([]byte(msg))
				return nil
			}
			for k, v := range rec.header {
				orig.Header()[k] = v
			}
			orig.WriteHeader(rec.status)
			_, _ = orig.Write(rec.body.Bytes())
			return nil
		}
	}
}

type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) { r.status = code }
