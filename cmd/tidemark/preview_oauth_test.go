package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tidemark/tidemark/internal/oauthtest"
	"github.com/tidemark/tidemark/internal/testenv"
	"github.com/tidemark/tidemark/store"
)

// Preview of an OAuth2 source (grant refresh_token): it buys its own
// token, stores the refresh token the endpoint rotates (encrypted, as a
// worker would: the old one is dead), shows no token; without
// TIDEMARK_SECRET_KEY it refuses, saying so.
func TestPreviewOAuth2(t *testing.T) {
	t.Parallel()
	const seed = "rt-preview-seed-000000"
	auth := oauthtest.New(t, "preview-client", "preview-secret-0000", seed, time.Hour)
	api := newPreviewAPI(t, nil)
	api.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !auth.Authorized(r) {
			http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `[{"id":1},{"id":2}]`)
	})
	conf := previewConfig(t, api.URL, fmt.Sprintf(`    auth:
      type: oauth2
      grant_type: refresh_token
      token_url: %s
      client_id_env: API_CLIENT_ID
      client_secret_env: API_CLIENT_SECRET
      refresh_token_env: API_REFRESH_TOKEN
`, auth.TokenURL()), `      - name: things
        path: /things
        records: {path: "", id: id}
`)
	dbURL := testenv.Database(t)
	env := map[string]string{"TIDEMARK_CONFIG": conf, "TIDEMARK_DATABASE_URL": dbURL,
		"API_CLIENT_ID": "preview-client", "API_CLIENT_SECRET": "preview-secret-0000", "API_REFRESH_TOKEN": seed}

	code, out, errOut := runCmd(t, env, "preview", "api/things", "--probe=false")
	if code == 0 || !strings.Contains(errOut, "needs TIDEMARK_SECRET_KEY to store the refresh tokens its endpoint rotates") {
		t.Errorf("without a key: exit %d, want a refusal naming TIDEMARK_SECRET_KEY\n%s%s", code, out, errOut)
	}
	if n := auth.Hits(); n != 0 {
		t.Errorf("without a key the token endpoint was asked %d times", n)
	}

	env["TIDEMARK_SECRET_KEY"] = strings.Repeat("5a", 32)
	code, out, errOut = runCmd(t, env, "preview", "api/things", "--probe=false")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	st, err := store.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	row, err := st.OAuthToken(context.Background(), "api")
	if err != nil {
		t.Fatalf("the rotated refresh token was not stored: %v", err)
	}
	rotated := auth.RefreshToken()
	if strings.Contains(string(row.RefreshTokenEnc), rotated) {
		t.Error("the refresh token is stored in the clear")
	}
	for _, tok := range append(auth.AccessTokens(), rotated, seed) {
		if strings.Contains(out+errOut, tok) {
			t.Errorf("the output holds a token:\n%s%s", out, errOut)
		}
	}
}
