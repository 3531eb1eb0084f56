package config

//go:generate go test . -run ^TestGenerated$ -update

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// Key is one key of the config file as docs/config.md lists it. Keys are
// derived from the Go types Load decodes into, so a field added to config.go
// is a key here at once; TestReference fails until it is documented.
type Key struct {
	// Path is where the key sits, lists marked with []: "sources[].resources[].pagination.style".
	Path string
	// Field is the Go type and field the key decodes into: "Pagination.Style".
	Field string
	// Type is the kind of value: string, integer, boolean, duration, byte size,
	// mapping, list of strings, list of mappings, mapping of strings.
	Type string
	// Required is "" (optional), "yes", or the condition under which it is required.
	Required string
	// Default is the value an absent key takes, as the field's comment states it.
	Default string
	// Allowed lists the accepted values of an enumerated key.
	Allowed []string
	// Rule says what else a value must satisfy ("[a-z0-9_]+", "> 0").
	Rule string
	// Example is the key with a typical value, as YAML.
	Example string
	// Doc is the field's doc comment from config.go.
	Doc string
}

// keyMeta is what the Go types cannot say about a key: whether it is
// required, what else validation demands of it, and an example.
type keyMeta struct {
	required string
	rule     string
	example  string
	// dflt fills in a default the field comment does not state.
	dflt string
}

const positive = "> 0"

// meta is keyed by Go type and field, like fieldDocs. Every field of the
// config types must have an entry with an example (TestReference).
var meta = map[string]keyMeta{
	"Config.Sources":  {required: "yes", rule: "at least one", example: "sources: [{name: shop, base_url: https://api.example.com, resources: [...]}]"},
	"Config.Webhooks": {example: "webhooks: [{url: https://hooks.example.com/tidemark, secret_env: HOOK_SECRET}]"},
	"Config.Views":    {example: "views: {schema: tidemark_data}"},

	"Views.Schema": {rule: "[a-z0-9_]+, at most 63 bytes, not a pg_ schema", example: "schema: mirror"},

	"Source.Name":           {required: "yes", rule: "[a-z0-9_]+, unique", example: "name: boxoffice"},
	"Source.BaseURL":        {required: "yes", rule: "absolute http(s) URL, no query, no credentials, no #fragment", example: "base_url: https://api.example.com/v1"},
	"Source.Headers":        {rule: "no Authorization or Proxy-Authorization; RFC 9110 header names", example: "headers: {Accept: application/json}"},
	"Source.Auth":           {dflt: "none (no credentials sent)", example: "auth: {type: bearer, token_env: BOXOFFICE_TOKEN}"},
	"Source.RateLimit":      {dflt: "unlimited", example: "rate_limit: {requests: 20, per: 1s, burst: 5}"},
	"Source.MaxConcurrency": {rule: positive, example: "max_concurrency: 4"},
	"Source.Timeout":        {rule: positive, example: "timeout: 10s"},
	"Source.MaxBody":        {rule: positive, example: "max_body: 64MiB"},
	"Source.AllowPrivate":   {example: "allow_private: true"},
	"Source.AllowHosts":     {rule: "host names, IP addresses or CIDR prefixes", example: "allow_hosts: [10.0.0.0/8, metadata.internal]"},
	"Source.Resources":      {required: "yes", rule: "at least one", example: "resources: [{name: ticket_sales, path: /v1/ticket_sales, records: {path: data, id: id}}]"},

	"Source.RateLimitHeaders": {example: "rate_limit_headers: ignore"},

	"Auth.Type":        {required: "yes", example: "type: bearer"},
	"Auth.TokenEnv":    {required: "bearer, header and query: this or token_file", rule: "environment variable name", example: "token_env: BOXOFFICE_TOKEN"},
	"Auth.TokenFile":   {required: "bearer, header and query: this or token_env", example: "token_file: /run/secrets/boxoffice_token"},
	"Auth.Header":      {required: "for type header", rule: "RFC 9110 header name", example: "header: X-Api-Key"},
	"Auth.Param":       {required: "for type query", rule: "letters, digits and . _ ~ -", example: "param: api_key"},
	"Auth.UsernameEnv": {required: "for type basic", rule: "environment variable name", example: "username_env: LEDGER_USER"},
	"Auth.PasswordEnv": {required: "for type basic", rule: "environment variable name", example: "password_env: LEDGER_PASSWORD"},
	"Auth.GrantType":   {required: "for type oauth2", example: "grant_type: client_credentials"},
	"Auth.TokenURL":    {required: "for type oauth2", rule: "absolute http(s) URL", example: "token_url: https://auth.example.com/oauth/token"},
	"Auth.ClientIDEnv": {required: "for type oauth2", rule: "environment variable name", example: "client_id_env: LEDGER_CLIENT_ID"},
	"Auth.ClientSecretEnv": {required: "for grant_type client_credentials", rule: "environment variable name",
		example: "client_secret_env: LEDGER_CLIENT_SECRET"},
	"Auth.RefreshTokenEnv": {required: "for grant_type refresh_token", rule: "environment variable name",
		example: "refresh_token_env: LEDGER_REFRESH_TOKEN"},
	"Auth.Scopes":      {dflt: "none (the endpoint's default scopes)", rule: "no spaces, quotes or backslashes", example: "scopes: [read:ledger]"},
	"Auth.TokenParams": {dflt: "none", rule: "not grant_type, client_id, client_secret, refresh_token or scope", example: "token_params: {audience: https://api.example.com}"},
	"Auth.AuthStyle":   {example: "auth_style: basic"},

	"RateLimit.Requests": {required: "yes", rule: positive, example: "requests: 20"},
	"RateLimit.Per":      {required: "yes", rule: positive, example: "per: 1s"},
	"RateLimit.Burst":    {rule: positive, example: "burst: 5"},

	"Resource.Name":         {required: "yes", rule: "[a-z0-9_]+, unique within the source", example: "name: ticket_sales"},
	"Resource.Path":         {required: "yes", rule: "starts with /, or is one {parent.FIELD} holding a URL on base_url", example: "path: /v1/ticket_sales?sort=id"},
	"Resource.Priority":     {example: "priority: critical"},
	"Resource.Method":       {example: "method: POST"},
	"Resource.Body":         {rule: "only with method POST; {cursor} needs style cursor, {since} delta, {until} delta.window", example: `body: {query: "query($after: String) { ... }", variables: {after: "{cursor}", first: "{limit}"}}`},
	"Resource.Freshness":    {rule: positive, example: "freshness: 30s"},
	"Resource.Records":      {required: "yes (records.id)", example: "records: {path: data, id: id}"},
	"Resource.Fields":       {dflt: "none: the raw record is stored", rule: "values are dotted paths", example: "fields: {amount: price.cents, state: status}"},
	"Resource.FieldTypes":   {dflt: "inferred from the newest 200 records when the view is made", rule: "keys: names in fields (or top-level record keys without fields), at most 63 bytes", example: "field_types: {amount: numeric, state: text}"},
	"Resource.IgnoreFields": {rule: "dotted paths", example: "ignore_fields: [meta.request_id]"},
	"Resource.Pagination":   {dflt: "style none", example: "pagination: {style: cursor, cursor_param: starting_after, next_field: next_cursor}"},
	"Resource.Probe":        {dflt: "strategy none", example: "probe: {strategy: etag, method: HEAD, every: 5s, max_every: 1m}"},
	"Resource.Delta":        {dflt: "none: every change triggers a full read", example: "delta: {param: updated_since, field: updated_at, format: rfc3339, overlap: 5s}"},
	"Resource.FullSync":     {example: "full_sync: {every: 24h, detect_deletes: true}"},
	"Resource.Audit":        {example: "audit: {initial_load: records}"},
	"Audit.InitialLoad":     {example: "initial_load: records"},
	"Resource.OnStatus":     {rule: "keys: HTTP statuses 400-599 except 429; values: empty | fail | retry", example: "on_status: {404: empty, 410: empty, 403: fail}"},

	"Records.Path": {dflt: `"" (the body is the array)`, rule: "dotted path", example: "path: data.items"},
	"Records.ID":   {required: "yes", rule: "dotted path", example: "id: settlement.id"},
	"Records.Item": {rule: "dotted path", example: "item: node"},

	"Pagination.Style":        {example: "style: cursor"},
	"Pagination.CursorParam":  {required: "for style cursor with method GET", example: "cursor_param: starting_after"},
	"Pagination.CursorFrom":   {rule: "cursor style only", example: "cursor_from: last_record"},
	"Pagination.NextField":    {required: "for style cursor (cursor_from response)", rule: "dotted path; cursor and next_url styles only", example: "next_field: next_cursor"},
	"Pagination.LimitParam":   {dflt: "none: no page size is sent", example: "limit_param: per_page"},
	"Pagination.Limit":        {rule: positive, example: "limit: 500"},
	"Pagination.PageParam":    {rule: "page style only", example: "page_param: _page"},
	"Pagination.Start":        {rule: ">= 0; page style only", example: "start: 0"},
	"Pagination.OffsetParam":  {rule: "offset style only", example: "offset_param: skip"},
	"Pagination.TotalField":   {dflt: "none", rule: "dotted path; page and offset styles only", example: "total_field: meta.total"},
	"Pagination.HasMoreField": {dflt: "none", rule: "dotted path; page, offset and cursor styles only", example: "has_more_field: has_more"},
	"Pagination.MaxPages":     {rule: positive, example: "max_pages: 20000"},
	"Pagination.ResumeWithin": {rule: positive, example: "resume_within: 30m"},

	"Probe.Strategy": {example: "strategy: etag"},
	"Probe.Method":   {rule: "GET for strategies hash, delta and rolling_hash", example: "method: HEAD"},
	"Probe.Every":    {rule: positive, example: "every: 5s"},
	"Probe.MaxEvery": {rule: ">= every", example: "max_every: 1m"},
	"Probe.Path":     {rule: "starts with /", example: "path: /v1/ticket_sales?limit=1"},
	"Probe.Limit":    {rule: positive + "; needs pagination.limit_param; not with path, nor with strategy delta or rolling_hash", example: "limit: 1"},

	"Delta.Param":  {required: "with method GET", example: "param: updated_since"},
	"Delta.Start":  {rule: "RFC 3339 timestamp or positive duration; time formats only", example: "start: 720h"},
	"Delta.Window": {rule: "needs start; time formats only", example: "window: {size: 24h, end_param: created_lt}"},

	"Window.Size":     {required: "yes", rule: positive, example: "size: 24h"},
	"Window.EndParam": {required: "with method GET", example: "end_param: created[lt]"},
	"Delta.Field":     {required: "yes", rule: "dotted path", example: "field: updated_at"},
	"Delta.Format":    {example: "format: unix"},
	"Delta.Overlap":   {rule: ">= 0; 0 with format number", example: "overlap: 5s"},
	"Delta.ClockSkew": {rule: ">= 0", example: "clock_skew: 30s"},

	"Resource.Parent":     {rule: "not with partitions; path or POST body names {parent.FIELD} or {partition}; probe strategy none", example: "parent: {resource: repos, changed_only: true}"},
	"Resource.Partitions": {rule: "unique, not empty; not with parent; path names {partition}; probe strategy none", example: "partitions: [eu, us, apac]"},

	"Parent.Resource":         {required: "yes", rule: "a resource of the same source; not this one, no cycle", example: "resource: repos"},
	"Parent.Key":              {rule: "dotted path", example: "key: owner.login"},
	"Parent.ChangedOnly":      {example: "changed_only: true"},
	"Parent.DeleteWithParent": {example: "delete_with_parent: false"},

	"FullSync.Every":             {rule: positive, example: "every: 6h"},
	"FullSync.DetectDeletes":     {example: "detect_deletes: true"},
	"FullSync.MaxDeleteFraction": {rule: "> 0 and <= 1", example: "max_delete_fraction: 0.05"},
	"FullSync.DeleteAfterReads":  {rule: "1 or 2", example: "delete_after_reads: 1"},

	"Webhook.URL":       {required: "yes", rule: "absolute http(s) URL", example: "url: https://hooks.example.com/tidemark"},
	"Webhook.SecretEnv": {dflt: "none: deliveries are unsigned", rule: "environment variable name", example: "secret_env: HOOK_SECRET"},
	"Webhook.Events":    {dflt: "all events", rule: "no duplicates", example: "events: [data.updated, run.failed]"},
}

// enums lists the accepted values of the enumerated keys, as validate.go
// checks them (TestSchemaEnums proves the two agree).
var enums = map[string][]string{
	"Auth.Type":             authTypes,
	"Auth.GrantType":        grantTypes,
	"Auth.AuthStyle":        authStyles,
	"Resource.Priority":     {PriorityCritical, PriorityDefault, PriorityLow},
	"Pagination.Style":      {PaginationNone, PaginationPage, PaginationOffset, PaginationCursor, PaginationLink, PaginationNextURL},
	"Probe.Strategy":        {ProbeETag, ProbeLastModified, ProbeHash, ProbeDelta, ProbeRollingHash, ProbeNone},
	"Probe.Method":          {"HEAD", "GET"},
	"Resource.Method":       {MethodGet, MethodPost},
	"Pagination.CursorFrom": {CursorFromResponse, CursorFromLastRecord},
	"Delta.Format":          {FormatRFC3339, FormatUnix, FormatUnixMS, FormatNumber},
	"Webhook.Events":        Events,

	"Source.RateLimitHeaders": {HeadersHonour, HeadersIgnore},
	"Audit.InitialLoad":       {InitialLoadSummary, InitialLoadRecords},
	// The types of view columns, the values of the field_types mapping.
	"Resource.FieldTypes": ViewTypes,
}

// defaultRE finds the default a field comment states: "Default 30s.",
// "Burst defaults to 1.", "(next_url style; default "next_url")".
var defaultRE = regexp.MustCompile(`(?:Default|defaults to|; default|\. default) ("[^"]*"|(?:[^.;)]|\.\d)+)`)

// Keys lists every key of the config file in file order, depth first.
func Keys() []Key { return keys(fieldDocs) }

func keys(docs map[string]string) []Key {
	var out []Key
	walkKeys(reflect.TypeFor[Config](), "", docs, &out)
	return out
}

func walkKeys(t reflect.Type, prefix string, docs map[string]string, out *[]Key) {
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		id := t.Name() + "." + f.Name
		m := meta[id]
		doc := docs[id]
		k := Key{
			Path:     prefix + name,
			Field:    id,
			Type:     typeName(f.Type),
			Required: m.required,
			Default:  statedDefault(t, doc),
			Allowed:  enums[id],
			Rule:     m.rule,
			Example:  m.example,
			Doc:      doc,
		}
		if k.Default == "" {
			k.Default = m.dflt
		}
		*out = append(*out, k)
		switch et := elem(f.Type); {
		case et.Kind() == reflect.Struct && et != f.Type && f.Type.Kind() == reflect.Slice:
			walkKeys(et, k.Path+"[].", docs, out)
		case et.Kind() == reflect.Struct:
			walkKeys(et, k.Path+".", docs, out)
		}
	}
}

// statedDefault returns the default doc states, with a reference to a sibling
// field ("Default Every.") turned into its YAML key.
func statedDefault(t reflect.Type, doc string) string {
	m := defaultRE.FindStringSubmatch(doc)
	if m == nil {
		return ""
	}
	d := strings.TrimSpace(m[1])
	if f, ok := t.FieldByName(d); ok {
		return "the value of `" + yamlName(f) + "`"
	}
	return d
}

// elem strips pointers and slices to the type a key's value decodes into.
func elem(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	return t
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == byteSizeType:
		return "byte size"
	case t == bodyType:
		return "JSON object"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Struct:
		return "mapping"
	case reflect.Slice:
		return "list of " + plural(typeName(t.Elem()))
	case reflect.Map:
		return "mapping of " + plural(typeName(t.Elem()))
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	}
	panic(fmt.Sprintf("config: no reference type name for %s", t))
}

func plural(s string) string { return s + "s" }

// Reference renders docs/config.md: every key of the config file with its
// type, default, allowed values and an example.
func Reference() string { return reference(fieldDocs) }

func reference(docs map[string]string) string {
	var b strings.Builder
	b.WriteString(referenceIntro)
	ks := keys(docs)
	sections, bySection := sectionsOf(ks)
	types := sectionTypes(ks)
	for _, sec := range sections {
		writeSection(&b, sec, docs[types[sec]], bySection[sec])
	}
	return b.String()
}

// referenceIntro opens docs/config.md: how values are written, and how
// record ids and numbers are canonicalised.
const referenceIntro = `<!-- Code generated by "go generate ./config" from config/config.go; DO NOT EDIT. -->

# Configuration reference

tidemark reads one YAML file: ` + "`--config` / `TIDEMARK_CONFIG`" + `, default ` + "`tidemark.yaml`" + `.
Check one with ` + "`tidemark config check FILE`" + `: it reports every problem at once, each
with file, line and field. This page is generated from the Go types that load
the file (` + "`config/config.go`" + `), so it lists every key there is; ` + "`go test ./config`" + `
fails when a key is undocumented or this page is stale.

- **Strict**: an unknown key is an error (with a "did you mean" hint).
- **Environment**: ` + "`${VAR}`" + ` and ` + "`${VAR:-default}`" + ` in any value (never in a key) are
  replaced from the environment before the value is converted; ` + "`$${`" + ` is a literal ` + "`${`" + `.
  A ` + "`${VAR}`" + ` whose variable is not set is an error naming it and the field
  (` + "`environment variable NOPE_URL is not set (sources[0].base_url)`" + `); write
  ` + "`${VAR:-}`" + ` for one that may be left unset.
- **duration**: a Go duration: ` + "`500ms`, `10s`, `1m30s`, `24h`" + `.
- **byte size**: a whole number of bytes with an optional unit: ` + "`1048576`, `512KB`, `64MiB`" + `
  (KB, MB, GB, TB decimal; KiB, MiB, GiB, TiB binary; case-sensitive).
- **boolean**: ` + "`true` / `false`" + ` (also ` + "`yes`/`no`, `on`/`off`" + `).
- **dotted path**: a field inside a JSON record or body, ` + "`price.cents`" + `.
- **Secrets** never appear in the file: ` + "`auth`" + ` and ` + "`webhooks`" + ` name environment
  variables or files that are read when a request is made.
- **Editor support**: ` + "`tidemark config schema`" + ` prints a JSON Schema of this file, committed as
  [tidemark.schema.json](tidemark.schema.json). With the YAML language server, start a config with
  ` + "`# yaml-language-server: $schema=docs/tidemark.schema.json`" + ` (path relative to the file).
  The schema is a little stricter than the loader: a ` + "`${VAR}`" + ` is accepted in string,
  number, boolean, duration and byte-size values but not in place of an enumerated one,
  and booleans must be ` + "`true`/`false`" + `.

A complete working file: [examples/demo.yaml](../examples/demo.yaml); configs for
the shapes of real public APIs: [examples/](../examples/).

## Record ids and values

What ` + "`records.id`" + ` reads is canonicalised once, by these rules, so that one record
upstream is one record in Postgres and two are two:

- **A number id is its value**, in canonical number form (below): ` + "`10`, `10.0`, `1e1`" + ` and
  the string ` + "`\"10\"`" + ` are all the record ` + "`10`" + `; ` + "`18446744073709551617`" + ` stays exact.
- **A string id is kept byte for byte**, and refused when its JSON text is not valid UTF-8
  or holds a lone UTF-16 surrogate escape (` + "`\"\\ud800\"`" + `): a JSON decoder would turn both
  into U+FFFD and two upstream records into one. The record is quarantined with a reason
  that quotes the id as received (` + "`id \"ab\\xff\" is not valid UTF-8`" + `), never merged or
  renamed. The replacement character itself (U+FFFD, literal or ` + "`\\ufffd`" + `) is a valid id.
- **Ids longer than 1,024 bytes** (too long for the primary key) are quarantined.
- **A record with no usable id** (missing, null, empty, an object), or **one id twice in a
  page with different content** (every copy), is quarantined, and the rest of the page is
  stored. A full read that met a record with no id at all tombstones nothing: it cannot
  tell which stored record it was.

**Numbers** in stored records and in content hashes are written by value, in one
canonical form: plain decimal notation, no exponent, no leading zeros, no trailing
fractional zeros, no sign on zero (` + "`1.0` → `1`, `-0` → `0`, `1.50e1` → `15`, `1e2` → `100`" + `),
exact for any size; a number whose plain form would be longer than 1,000 characters keeps
an exponent form (` + "`1e999999`" + `). A re-spelled number is therefore not a change. A number
beyond Postgres' ` + "`numeric`" + ` range quarantines its record, as does a string holding U+0000
(which ` + "`jsonb`" + ` cannot store). See the quarantine in [architecture.md](architecture.md#what-tidemark-guarantees-about-values-and-ids).
`

// sectionsOf groups the keys by the mapping that holds them: one section
// per mapping, in file order.
func sectionsOf(ks []Key) (sections []string, bySection map[string][]Key) {
	bySection = map[string][]Key{}
	for _, k := range ks {
		sec := parentKey(k.Path)
		if _, ok := bySection[sec]; !ok {
			sections = append(sections, sec)
		}
		bySection[sec] = append(bySection[sec], k)
	}
	return sections, bySection
}

// sectionTypes names the Go struct behind each section ("" is Config; a
// list of structs is path[]), whose doc opens the section.
func sectionTypes(ks []Key) map[string]string {
	types := map[string]string{"": "Config"}
	for _, k := range ks {
		if et := fieldType(k.Field); et != nil && elem(et).Kind() == reflect.Struct {
			p := k.Path
			if et.Kind() == reflect.Slice {
				p += "[]"
			}
			types[p] = elem(et).Name()
		}
	}
	return types
}

// writeSection writes one mapping's section: its title, its type's doc,
// the table of its keys and each key's doc under an anchor.
func writeSection(b *strings.Builder, sec, doc string, ks []Key) {
	title := "top level"
	if sec != "" {
		title = "`" + sec + "`"
	}
	fmt.Fprintf(b, "\n## %s\n\n", title)
	if doc != "" {
		b.WriteString(doc + "\n\n")
	}
	b.WriteString("| key | type | required | default | allowed | example |\n|---|---|---|---|---|---|\n")
	for _, k := range ks {
		allowed := k.Rule
		if len(k.Allowed) > 0 {
			allowed = "`" + strings.Join(k.Allowed, "`, `") + "`"
			if k.Rule != "" {
				allowed += "; " + k.Rule
			}
		}
		fmt.Fprintf(b, "| [`%s`](#%s) | %s | %s | %s | %s | `%s` |\n",
			lastKey(k.Path), anchor(k.Path), k.Type, cell(k.Required), cell(k.Default), cell(allowed), cell(k.Example))
	}
	b.WriteString("\n")
	for _, k := range ks {
		fmt.Fprintf(b, "<a id=\"%s\"></a>**`%s`** — %s\n\n", anchor(k.Path), k.Path, k.Doc)
	}
}

func fieldType(id string) reflect.Type {
	typ, field, _ := strings.Cut(id, ".")
	for _, t := range configTypes() {
		if t.Name() == typ {
			if f, ok := t.FieldByName(field); ok {
				return f.Type
			}
		}
	}
	return nil
}

// configTypes lists the struct types of the config, the root first.
func configTypes() []reflect.Type {
	var out []reflect.Type
	seen := map[reflect.Type]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		if seen[t] {
			return
		}
		seen[t] = true
		out = append(out, t)
		for i := range t.NumField() {
			if et := elem(t.Field(i).Type); et.Kind() == reflect.Struct && et != durationType {
				walk(et)
			}
		}
	}
	walk(reflect.TypeFor[Config]())
	return out
}

func parentKey(path string) string {
	i := strings.LastIndexByte(path, '.')
	if i < 0 {
		return ""
	}
	return path[:i]
}

func lastKey(path string) string { return path[strings.LastIndexByte(path, '.')+1:] }

func anchor(path string) string {
	r := strings.NewReplacer("[]", "", ".", "-", "_", "_")
	return "key-" + r.Replace(path)
}

func cell(s string) string {
	if s == "" {
		return "—"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}
