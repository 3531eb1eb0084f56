package ratelimit

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Quota is the request budget an upstream announces in its rate-limit
// headers.
type Quota struct {
	// Remaining is how many requests the window has left; -1 when no
	// header names it.
	Remaining int
	// Limit is the window's whole budget; 0 when not announced. For
	// information: the pacing needs only Remaining and Reset.
	Limit int
	// Reset is the time until the window resets (and Remaining is whole
	// again); 0 when not announced or already past.
	Reset time.Duration
}

// Reasons a QuotaError gives (label reason of
// tidemark_ratelimit_headers_ignored_total).
const (
	ReasonMalformed = "malformed" // a value that is not a number (or date)
	ReasonAbsurd    = "absurd"    // a reset beyond Options.MaxReset
	ReasonNoReset   = "no_reset"  // a remaining without a reset: no window to spread it over
)

// QuotaError says why an upstream's rate-limit headers were not used.
type QuotaError struct {
	Reason string // ReasonMalformed, ReasonAbsurd or ReasonNoReset
	Header string
	Value  string
}

func (e *QuotaError) Error() string {
	switch e.Reason {
	case ReasonAbsurd:
		return fmt.Sprintf("%s %q: reset too far away to be a rate-limit window", e.Header, e.Value)
	case ReasonNoReset:
		return fmt.Sprintf("%s %q: no reset announced, so no window to spread the remaining requests over", e.Header, e.Value)
	}
	return fmt.Sprintf("%s %q: not a number", e.Header, e.Value)
}

// ReadQuota reads the budget an upstream announces, in the first of these
// forms present:
//
//   - RateLimit-Remaining / RateLimit-Reset (IETF draft
//     httpapi-ratelimit-headers; Reset in delta seconds) and
//     RateLimit-Limit;
//   - X-RateLimit-Remaining / X-RateLimit-Reset / X-RateLimit-Limit
//     (GitHub, Twitter, many others);
//   - the combined RateLimit header of later drafts: a list of policies
//     `"default";r=50;t=30` (the one with the fewest remaining wins), or
//     the older `limit=100, remaining=50, reset=30`.
//
// Reset values: below 1e9 delta seconds (fractions allowed); from 1e9 on
// Unix epoch seconds (GitHub) and from 1e12 on epoch milliseconds (no
// window is 30 years long, and no epoch is that early); or an HTTP date.
// A reset in the past is 0.
//
// No header: Remaining -1 and no error. A value that does not parse, a
// remaining without a reset, or a reset beyond maxReset: a *QuotaError; Remaining is still set when it
// parsed, so the last value seen can be shown.
func ReadQuota(h http.Header, now time.Time, maxReset time.Duration) (Quota, error) {
	q := Quota{Remaining: -1}
	rName, rv, tName, tv, lv := remainingHeaders(h)
	if rName == "" {
		return q, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(rv))
	if err != nil || n < 0 {
		return q, &QuotaError{Reason: ReasonMalformed, Header: rName, Value: rv}
	}
	q.Remaining = n
	if l, err := strconv.Atoi(strings.TrimSpace(lv)); err == nil && l > 0 {
		q.Limit = l
	}
	if strings.TrimSpace(tv) == "" {
		return q, &QuotaError{Reason: ReasonNoReset, Header: rName, Value: rv}
	}
	reset, ok := ParseReset(tv, now)
	switch {
	case !ok:
		return q, &QuotaError{Reason: ReasonMalformed, Header: tName, Value: tv}
	case reset > maxReset:
		return q, &QuotaError{Reason: ReasonAbsurd, Header: tName, Value: tv}
	}
	q.Reset = reset
	return q, nil
}

// remainingHeaders finds the header form in use and returns the names and
// values of its remaining, reset and limit.
func remainingHeaders(h http.Header) (rName, rv, tName, tv, lv string) {
	for _, prefix := range []string{"RateLimit-", "X-RateLimit-"} {
		if v := h.Get(prefix + "Remaining"); v != "" {
			return prefix + "Remaining", v, prefix + "Reset", h.Get(prefix + "Reset"), h.Get(prefix + "Limit")
		}
	}
	if v := h.Get("RateLimit"); v != "" {
		rv, tv, lv = combined(v)
		if rv != "" {
			return "RateLimit", rv, "RateLimit", tv, lv
		}
	}
	return "", "", "", "", ""
}

// combined reads remaining, reset and limit from a RateLimit header: a
// list of policies (`"burst";r=5;t=1, "daily";r=100;t=3600`: the policy
// with the fewest remaining binds) or one policy spread over the list
// (`limit=100, remaining=5, reset=30`).
func combined(v string) (remaining, reset, limit string) {
	best := -1
	merged := map[string]string{}
	for _, item := range strings.Split(v, ",") {
		params := map[string]string{}
		for _, part := range strings.Split(item, ";") {
			k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok {
				continue
			}
			k, val = strings.ToLower(strings.TrimSpace(k)), strings.Trim(strings.TrimSpace(val), `"`)
			params[k], merged[k] = val, val
		}
		r, ok := params["r"]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(r)
		if err != nil {
			return r, params["t"], params["q"] // let the caller report it
		}
		if best < 0 || n < best {
			best, remaining, reset, limit = n, r, params["t"], params["q"]
		}
	}
	if best >= 0 {
		return remaining, reset, limit
	}
	return merged["remaining"], merged["reset"], merged["limit"]
}
