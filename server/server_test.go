package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/store"
)

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conf, err := config.Parse("t.yaml", []byte(`
sources:
  - name: shop
    base_url: http://127.0.0.1:1
    resources:
      - {name: orders, path: /orders, records: {id: id}, freshness: 1m}
`))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, testenv.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.EnsureStates(ctx, store.KeysOf(conf))
	run := store.Run{Source: "shop", Resource: "orders", Kind: store.KindFull, Trigger: "manual"}
	st.StartRun(ctx, &run)

	srv, err := server.New(server.Config{AdminToken: "tok"}, conf, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	get := func(path, token string) (int, string) {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	tests := []struct {
		name, path, token string
		code              int
		contains          string
	}{
		{"healthz needs no token", "/healthz", "", 200, `"ok"`},
		{"readyz pings the database", "/readyz", "", 200, `"ready"`},
		{"api needs the token", "/api/resources", "", 401, "admin token"},
		{"wrong token", "/api/resources", "nope", 401, "admin token"},
		{"resources", "/api/resources", "tok", 200, `"freshness":"1m0s"`},
		{"runs", "/api/runs?source=shop&limit=5", "tok", 200, `"status":"running"`},
		{"bad limit", "/api/runs?limit=ten", "tok", 400, `limit=\"ten\"`},
		{"bad before", "/api/runs?before=-1", "tok", 400, "want a run id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(tt.path, tt.token)
			if code != tt.code || !strings.Contains(body, tt.contains) {
				t.Fatalf("GET %s = %d %s; want %d containing %s", tt.path, code, body, tt.code, tt.contains)
			}
			if !json.Valid([]byte(body)) {
				t.Fatalf("GET %s: body is not JSON: %s", tt.path, body)
			}
		})
	}
	if _, err := server.New(server.Config{Addr: "0.0.0.0:8080"}, conf, st, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("server on 0.0.0.0 without a token was allowed")
	}
}
