// Package config reads diamondd's configuration from the environment and
// validates it, so that a bad or missing value stops the process at start
// with a message naming the variable.
package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
)

// Config is every setting of the service.
type Config struct {
	DatabaseURL string        `env:"DATABASE_URL"`
	DBMaxConns  int32         `env:"DB_MAX_CONNS" envDefault:"32"`
	RedisURL    string        `env:"REDIS_URL"`
	HTTPAddr    string        `env:"HTTP_ADDR" envDefault:":8080"`
	LogLevel    string        `env:"LOG_LEVEL" envDefault:"info"`
	ShutdownTTL time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`

	JWTSecret        string `env:"JWT_SECRET"`
	JWTPublicKeyFile string `env:"JWT_PUBLIC_KEY_FILE"`
	JWTJWKSFile      string `env:"JWT_JWKS_FILE"`
	JWTIssuer        string `env:"JWT_ISSUER"`
	JWTAudience      string `env:"JWT_AUDIENCE"`

	IdempotencyTTL time.Duration `env:"IDEMPOTENCY_TTL" envDefault:"168h"`
}

// Load reads the environment.
func Load() (Config, error) {
	c, err := env.ParseAs[Config]()
	if err != nil {
		return Config{}, explain(err)
	}
	return c, c.Validate()
}

// Validate checks what the types alone do not.
func (c Config) Validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("DATABASE_URL is required (postgres://user@host:5432/db)"))
	}
	if c.JWTSecret == "" && c.JWTPublicKeyFile == "" && c.JWTJWKSFile == "" {
		errs = append(errs, errors.New("JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_FILE is required"))
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 16 {
		errs = append(errs, errors.New("JWT_SECRET must be at least 16 characters"))
	}
	if c.DBMaxConns < 2 {
		errs = append(errs, errors.New("DB_MAX_CONNS must be at least 2"))
	}
	if c.IdempotencyTTL < 7*24*time.Hour {
		errs = append(errs, errors.New("IDEMPOTENCY_TTL must be at least 168h (keys are kept at least 7 days)"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, not %q", c.LogLevel))
	}
	return errors.Join(errs...)
}

// explain rewrites the env library's parse errors, which name Go fields, to
// name the environment variable instead.
func explain(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeFor[Config]()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				out = append(out, fmt.Errorf("%s: invalid %s value: %v", name, pe.Type, pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}
