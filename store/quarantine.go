package store

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/tidemark/tidemark"
)

// MaxIDBytes is the longest id stored as a record's key. A btree entry of
// the primary key holds at most about 2.7 KB; longer ids are quarantined
// rather than allowed to fail their page.
const MaxIDBytes = 1024

// maxRawBytes bounds what the quarantine keeps of a record's JSON.
const maxRawBytes = 64 << 10

// storable splits records into those Postgres can store and those it
// cannot, with the reason: an id longer than MaxIDBytes, or an id or a
// payload holding U+0000, which text and jsonb refuse. These are checked
// here rather than left to fail the page, which would fail every retry the
// same way.
func storable(recs []Record) ([]Record, []Rejected) {
	var aside []Rejected
	ok := recs[:0:0]
	for _, r := range recs {
		switch {
		case len(r.ExternalID) > MaxIDBytes:
			aside = append(aside, Rejected{ExternalID: r.ExternalID, Raw: r.Payload,
				Reason: fmt.Sprintf("id is %d bytes long: at most %d are stored", len(r.ExternalID), MaxIDBytes)})
		case strings.IndexByte(r.ExternalID, 0) >= 0:
			aside = append(aside, Rejected{ExternalID: r.ExternalID, Raw: r.Payload,
				Reason: `the id holds U+0000 (\u0000), which Postgres cannot store in text`})
		case hasNUL(r.Payload):
			aside = append(aside, Rejected{ExternalID: r.ExternalID, Raw: r.Payload,
				Reason: `a string holds U+0000 (\u0000), which Postgres' jsonb cannot store`})
		default:
			ok = append(ok, r)
		}
	}
	if len(aside) == 0 {
		return recs, nil
	}
	return ok, aside
}

// hasNUL reports whether JSON text holds the escape \u0000 (an escaped
// backslash followed by "u0000" is not one).
func hasNUL(doc []byte) bool {
	for i := 0; ; {
		j := bytes.Index(doc[i:], []byte(`\u0000`))
		if j < 0 {
			return false
		}
		j += i
		slashes := 0
		for k := j; k > 0 && doc[k-1] == '\\'; k-- {
			slashes++
		}
		if slashes%2 == 0 {
			return true
		}
		i = j + 1
	}
}

// qkey is the quarantine's key of a record: its id, or, for an id too long
// for an index, one holding U+0000 or a record without a usable id, a
// digest of what tells it apart.
func (r Rejected) qkey() string {
	if r.ExternalID != "" && len(r.ExternalID) <= 512 && strings.IndexByte(r.ExternalID, 0) < 0 {
		return r.ExternalID
	}
	sum := sha256.Sum256([]byte(r.ExternalID + "\x00" + r.Key))
	if r.ExternalID != "" {
		return "id-sha256:" + hex.EncodeToString(sum[:])
	}
	return "no-id-sha256:" + hex.EncodeToString(sum[:])
}

// text makes s storable in a text column: valid UTF-8, no NUL byte.
func text(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", `\u0000`)
}

// maxReasonBytes bounds a quarantine reason (which may quote a huge id).
const maxReasonBytes = 2048

func reason(s string) string {
	if len(s) > maxReasonBytes {
		s = strings.ToValidUTF8(s[:maxReasonBytes], "") + "…"
	}
	return text(s)
}

// quarantine upserts a page's records set aside and returns those that
// were not in quarantine before.
func quarantine(ctx context.Context, tx *gorm.DB, p Page, aside []Rejected) ([]Rejected, error) {
	var keys, ids, reasons, raws []string
	index := map[string]int{}
	for _, a := range aside {
		k := a.qkey()
		raw := a.Raw
		if len(raw) > maxRawBytes {
			raw = raw[:maxRawBytes]
		}
		if i, dup := index[k]; dup { // one statement may not touch a row twice
			reasons[i], raws[i] = reason(a.Reason), text(string(raw))
			continue
		}
		index[k] = len(keys)
		keys, ids = append(keys, k), append(ids, text(a.ExternalID))
		reasons, raws = append(reasons, reason(a.Reason)), append(raws, text(string(raw)))
	}
	var pass any
	if p.PassID != 0 {
		pass = p.PassID
	}
	rows, err := tx.Statement.ConnPool.QueryContext(ctx, `
		INSERT INTO record_quarantine AS q (source, resource, qkey, external_id, reason, raw, run_id, pass_id)
		SELECT $1, $2, k, nullif(e, ''), r, w, $3, $4::bigint
		FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) AS t(k, e, r, w)
		ON CONFLICT (source, resource, qkey) DO UPDATE
		SET reason = EXCLUDED.reason, raw = EXCLUDED.raw, run_id = EXCLUDED.run_id,
			pass_id = coalesce(EXCLUDED.pass_id, q.pass_id), last_seen_at = now()
		RETURNING qkey, xmax = 0`, p.Source, p.Resource, p.RunID, pass, keys, ids, reasons, raws)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var newly []Rejected
	for rows.Next() {
		var k string
		var inserted bool
		if err := rows.Scan(&k, &inserted); err != nil {
			return nil, err
		}
		if inserted {
			i := index[k]
			newly = append(newly, Rejected{ExternalID: ids[i], Key: k, Reason: reasons[i]})
		}
	}
	return newly, rows.Err()
}

// writeQuarantineEvent announces records newly set aside (not the same
// ones again on every read).
func writeQuarantineEvent(tx *gorm.DB, p Page, newly []Rejected) error {
	ev := RecordsQuarantined{Source: p.Source, Resource: p.Resource, RunID: p.RunID, Quarantined: len(newly), At: time.Now().UTC()}
	seen := map[string]bool{}
	for _, r := range newly {
		if len(ev.IDs) < cmpOr(p.MaxChangedIDs, 100) {
			ev.IDs = append(ev.IDs, cmp.Or(r.ExternalID, r.Key))
		}
		if why := reasonOnly(r.Reason); !seen[why] && len(ev.Reasons) < 5 {
			seen[why] = true
			ev.Reasons = append(ev.Reasons, why)
		}
	}
	return writeOutbox(tx, tidemark.EventRecordsQuarantined, p.Key, p.RunID, ev)
}

// recordPrefix is where a reason says which record it is about ("page 3,
// record 7: ").
var recordPrefix = regexp.MustCompile(`^(page \d+, )?record \d+: `)

// reasonOnly drops a reason's record prefix, so that the same problem on
// several records reads as one.
func reasonOnly(reason string) string {
	return recordPrefix.ReplaceAllLiteralString(reason, "")
}

// refused asks Postgres which payloads it cannot take as jsonb, by index,
// with its reason. A page only comes here after its upsert failed with a
// data exception the checks in storable did not foresee (a number beyond
// numeric's range, say).
func (s *Store) refused(ctx context.Context, recs []Record) (map[int]string, error) {
	payloads := make([]string, len(recs))
	for i, r := range recs {
		payloads[i] = string(r.Payload)
	}
	sqlDB, err := s.db.DB()
	if err != nil {
		return nil, err
	}
	rows, err := sqlDB.QueryContext(ctx, `
		SELECT ord, why FROM (
			SELECT ord, tidemark_jsonb_error(p) AS why FROM unnest($1::text[]) WITH ORDINALITY AS t(p, ord)
		) x WHERE why IS NOT NULL`, payloads)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	bad := map[int]string{}
	for rows.Next() {
		var ord int
		var why string
		if err := rows.Scan(&ord, &why); err != nil {
			return nil, err
		}
		bad[ord-1] = why
	}
	return bad, rows.Err()
}

// dataException reports an error Postgres raised about a value (SQLSTATE
// class 22, data exception, or 54, a program limit such as an index row
// too large): retrying the same values fails the same way.
func dataException(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "54"))
}
