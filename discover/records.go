package discover

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tidemark/tidemark/extract"
)

// envelopes are the keys APIs commonly wrap a record array in.
var envelopes = []string{"data", "items", "results", "records", "entries", "rows", "list", "objects", "elements", "values", "content"}

type arrayCandidate struct {
	path  string
	n     int
	score int
}

// findArray locates the record array in a decoded body.
func findArray(doc any, resource string) (path string, evidence string, err error) {
	if arr, ok := doc.([]any); ok {
		if len(arr) == 0 {
			return "", "", notUnderstood("the response is an empty JSON array", "at least one record to find the id field: point discover at a collection with records")
		}
		if objects(arr) < len(arr) {
			return "", "", notUnderstood("the response is a JSON array of "+extract.Kind(arr[0])+"s, not of objects", "records that are JSON objects with an id field")
		}
		return "", fmt.Sprintf("the body is a JSON array of %d objects", len(arr)), nil
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return "", "", notUnderstood("the response is a JSON "+extract.Kind(doc), "a JSON array of records, or an object holding one")
	}
	var cands []arrayCandidate
	var empty []string
	var walk func(v map[string]any, prefix string, depth int)
	walk = func(v map[string]any, prefix string, depth int) {
		for k, child := range v {
			p := join(prefix, k)
			switch c := child.(type) {
			case []any:
				n := objects(c)
				if len(c) == 0 {
					empty = append(empty, p)
				}
				if n == 0 || n < len(c) {
					continue
				}
				score := 0
				if slices.Contains(envelopes, strings.ToLower(k)) {
					score += 2
				}
				if strings.EqualFold(k, resource) || strings.EqualFold(k, singular(resource)) {
					score += 3
				}
				cands = append(cands, arrayCandidate{path: p, n: n, score: score - depth})
			case map[string]any:
				if depth < 4 {
					walk(c, p, depth+1)
				}
			}
		}
	}
	walk(obj, "", 0)
	if len(cands) == 0 {
		if len(empty) > 0 {
			sort.Strings(empty)
			return "", "", notUnderstood(fmt.Sprintf("a JSON object whose arrays (%s) are empty", strings.Join(empty, ", ")),
				"at least one record to find the id field: point discover at a collection with records")
		}
		return "", "", notUnderstood(fmt.Sprintf("a JSON object with keys %s and no array of objects", keyList(obj)),
			"a collection endpoint: a JSON array of records, or an object holding one (for example under data, items or results)")
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].n != cands[j].n {
			return cands[i].n > cands[j].n
		}
		if cands[i].score != cands[j].score {
			return cands[i].score > cands[j].score
		}
		return cands[i].path < cands[j].path
	})
	best := cands[0]
	evidence = fmt.Sprintf("%q is the largest array of objects in the body (%d records)", best.path, best.n)
	if len(cands) > 1 {
		var others []string
		for _, c := range cands[1:] {
			others = append(others, fmt.Sprintf("%s (%d)", c.path, c.n))
		}
		evidence += "; other arrays: " + strings.Join(others, ", ")
	}
	return best.path, evidence, nil
}

func objects(arr []any) int {
	n := 0
	for _, v := range arr {
		if _, ok := v.(map[string]any); ok {
			n++
		}
	}
	return n
}

// leaves flattens a record into dotted paths of its scalar values (nested
// objects up to three levels; arrays are skipped).
func leaves(rec map[string]any) map[string]any {
	out := map[string]any{}
	var walk func(v map[string]any, prefix string, depth int)
	walk = func(v map[string]any, prefix string, depth int) {
		for k, child := range v {
			p := join(prefix, k)
			switch c := child.(type) {
			case map[string]any:
				if depth < 3 {
					walk(c, p, depth+1)
				}
			case []any:
			default:
				out[p] = c
			}
		}
	}
	walk(rec, "", 0)
	return out
}

// idCandidate is a field that could be the record id.
type idCandidate struct {
	path      string
	score     int
	ascending bool
	first     bool
}

// flatten returns each record's leaves and the sorted paths of the first
// record's.
func flatten(recs []map[string]any) (flat []map[string]any, paths []string) {
	flat = make([]map[string]any, len(recs))
	for i, r := range recs {
		flat[i] = leaves(r)
	}
	for p := range flat[0] {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return flat, paths
}

// findID picks the id field among the records of the first page.
func findID(recs []map[string]any, firstKey string, resource string) (id string, evidence string, confidence string, err error) {
	flat, all := flatten(recs)
	var cands []idCandidate
	var uniqueOthers []string
	for _, p := range all {
		vals := make([]string, 0, len(flat))
		ok := true
		for _, f := range flat {
			s, good := scalarText(f[p])
			if !good {
				ok = false
				break
			}
			vals = append(vals, s)
		}
		if !ok || !distinct(vals) {
			continue
		}
		score, idLike := idScore(p, resource)
		if !idLike {
			uniqueOthers = append(uniqueOthers, p)
			continue
		}
		c := idCandidate{path: p, score: score, ascending: ascending(vals), first: p == firstKey}
		if c.ascending && len(vals) > 1 {
			c.score += 15
		}
		if c.first {
			c.score += 10
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		found := "no field named like an id (id, uuid, *_id, *.id) that is unique and present in every record"
		if len(uniqueOthers) > 0 {
			found += fmt.Sprintf("; unique fields: %s", strings.Join(uniqueOthers, ", "))
		}
		return "", "", "", notUnderstood(found, "a stable unique id in every record (tidemark keys records by it)")
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].score > cands[j].score })
	best := cands[0]
	var why []string
	why = append(why, fmt.Sprintf("unique and present in all %d records", len(recs)))
	if best.ascending && len(recs) > 1 {
		why = append(why, "ascending in listing order")
	}
	if best.first {
		why = append(why, "the first field of each record")
	}
	evidence = fmt.Sprintf("%q is %s", best.path, strings.Join(why, ", "))
	confidence = "high"
	if len(cands) > 1 {
		var others []string
		for _, c := range cands[1:] {
			others = append(others, c.path)
		}
		evidence += "; also unique: " + strings.Join(others, ", ")
		if cands[1].score+10 > best.score {
			confidence = "medium"
		}
	}
	if len(recs) < 3 {
		confidence = "low"
		evidence += fmt.Sprintf(" (only %d records seen)", len(recs))
	}
	return best.path, evidence, confidence, nil
}

// idScore ranks a field name as an id; idLike is false for names that do
// not look like ids at all.
func idScore(path, resource string) (score int, idLike bool) {
	parts := strings.Split(path, ".")
	name := parts[len(parts)-1]
	lower := strings.ToLower(name)
	nested := len(parts) > 1
	parent := ""
	if nested {
		parent = strings.ToLower(parts[len(parts)-2])
	}
	related := func(prefix string) bool {
		prefix = strings.ToLower(prefix)
		r := strings.ToLower(resource)
		return prefix != "" && (prefix == r || prefix == singular(r) || strings.HasPrefix(r, prefix))
	}
	switch {
	case lower == "id" && !nested:
		return 100, true
	case (lower == "uuid" || lower == "guid") && !nested:
		return 90, true
	case lower == "id" || lower == "uuid":
		s := 50
		if related(parent) {
			s += 30
		}
		if parent == "meta" || parent == "metadata" {
			s -= 40
		}
		return s - 5*len(parts), true
	case strings.HasSuffix(lower, "_id") || (strings.HasSuffix(name, "Id") || strings.HasSuffix(name, "ID")) && len(name) > 2:
		prefix := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(lower, "_id"), "id"), "_")
		s := 60
		if related(prefix) {
			s += 25
		}
		if nested {
			s -= 20
		}
		return s, true
	case lower == "key" || lower == "uid" || lower == "slug":
		return 40, true
	}
	return 0, false
}

func scalarText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, x != ""
	case json.Number:
		return x.String(), true
	}
	return "", false
}

func distinct(vals []string) bool {
	seen := make(map[string]bool, len(vals))
	for _, v := range vals {
		if seen[v] {
			return false
		}
		seen[v] = true
	}
	return true
}

// ascending reports whether vals increase strictly, numerically when all are
// numbers, else as strings.
func ascending(vals []string) bool {
	nums := make([]float64, 0, len(vals))
	for _, v := range vals {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			nums = nil
			break
		}
		nums = append(nums, f)
	}
	for i := 1; i < len(vals); i++ {
		if nums != nil {
			if nums[i] <= nums[i-1] {
				return false
			}
		} else if vals[i] <= vals[i-1] {
			return false
		}
	}
	return true
}

// firstKey returns the first key of the first record in the raw body, or "".
func firstKey(body []byte, path string) string {
	var raw json.RawMessage = body
	if path != "" {
		for part := range strings.SplitSeq(path, ".") {
			var m map[string]json.RawMessage
			if json.Unmarshal(raw, &m) != nil {
				return ""
			}
			raw = m[part]
		}
	}
	var arr []json.RawMessage
	if json.Unmarshal(raw, &arr) != nil || len(arr) == 0 {
		return ""
	}
	dec := json.NewDecoder(strings.NewReader(string(arr[0])))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	t, err := dec.Token()
	if err != nil {
		return ""
	}
	k, _ := t.(string)
	return k
}

// recordsAt returns the objects of the array at path, with their ids.
func recordsAt(doc any, path, id string) ([]map[string]any, []string, error) {
	arr, err := extract.Array(doc, path)
	if err != nil {
		return nil, nil, err
	}
	recs := make([]map[string]any, 0, len(arr))
	ids := make([]string, 0, len(arr))
	for i, v := range arr {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("record %d is a %s, not an object", i, extract.Kind(v))
		}
		recs = append(recs, m)
		if id != "" {
			s, err := extract.ID(m, id)
			if err != nil {
				return nil, nil, fmt.Errorf("record %d: %w", i, err)
			}
			ids = append(ids, s)
		}
	}
	return recs, ids, nil
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func singular(s string) string {
	switch {
	case strings.HasSuffix(s, "ies"):
		return strings.TrimSuffix(s, "ies") + "y"
	case strings.HasSuffix(s, "ses"):
		return strings.TrimSuffix(s, "es")
	case strings.HasSuffix(s, "s"):
		return strings.TrimSuffix(s, "s")
	}
	return s
}

func keyList(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 8 {
		keys = append(keys[:8], "…")
	}
	return strings.Join(keys, ", ")
}
