package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// mutate asks demo-upstream to change records now (POST /_mutate).
func mutate(ctx context.Context, base string, body map[string]any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/_mutate", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s/_mutate: %w", base, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s/_mutate %s: %s: %s", base, b, resp.Status, out)
	}
	return nil
}

// upstreamStats is demo-upstream's GET /_stats.
type upstreamStats struct {
	Requests  int64            `json:"requests"`
	BodyBytes int64            `json:"body_bytes"`
	ByStatus  map[string]int64 `json:"by_status"`
	Resources map[string]struct {
		Requests  int64            `json:"requests"`
		BodyBytes int64            `json:"body_bytes"`
		ByStatus  map[string]int64 `json:"by_status"`
		Records   int64            `json:"records"`
	} `json:"resources"`
}

func stats(ctx context.Context, base string) (upstreamStats, error) {
	var s upstreamStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_stats", nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, fmt.Errorf("GET %s/_stats: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("GET %s/_stats: %s", base, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("GET %s/_stats: %w", base, err)
	}
	return s, nil
}
