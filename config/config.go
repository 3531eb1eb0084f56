package config

import (
	"strconv"
	"time"

	"github.com/tidemark/tidemark"
)

// Config is the whole tidemark configuration file (tidemark.yaml).
type Config struct {
	// Sources are the external systems to keep in step with. At least one.
	Sources []Source `yaml:"sources"`
	// Webhooks receive tidemark's events (data.updated, resource.stale, ...).
	Webhooks []Webhook `yaml:"webhooks"`
	// Views says where the typed views of the records are kept.
	Views Views `yaml:"views"`
}

// Views configures the read-only typed views tidemark keeps over its
// records: one per resource, named {source}_{resource}, made by tidemark
// migrate and tidemark views.
type Views struct {
	// Schema is the Postgres schema the views live in. tidemark creates it,
	// and drops only the views it made there. Default tidemark_data.
	Schema string `yaml:"schema"`
}

// View column types (values of a resource's field_types).
const (
	TypeText        = "text"
	TypeNumeric     = "numeric"
	TypeBoolean     = "boolean"
	TypeTimestamptz = "timestamptz"
	TypeJSONB       = "jsonb"
)

// ViewTypes lists the view column types, narrowest first: inference picks
// the first that every sampled value fits.
var ViewTypes = []string{TypeBoolean, TypeNumeric, TypeTimestamptz, TypeText, TypeJSONB}

// Source is one external system: where it is, how to authenticate, and how
// hard the whole fleet may call it.
type Source struct {
	// Name identifies the source in tables, tasks and metrics: [a-z0-9_]+, unique.
	Name string `yaml:"name"`
	// BaseURL is the scheme and host (and optional path prefix) every resource path is relative to.
	BaseURL string `yaml:"base_url"`
	// Headers are sent with every request (for example Accept). Never put secrets here: use Auth
	// (an Authorization header is rejected).
	Headers map[string]string `yaml:"headers"`
	// Auth names where the credentials come from; the config never holds a secret itself.
	Auth *Auth `yaml:"auth"`
	// RateLimit caps requests per period for all workers together. Nil: unlimited.
	RateLimit *RateLimit `yaml:"rate_limit"`
	// RateLimitHeaders is honour | ignore: whether the budget the upstream announces
	// (RateLimit-Remaining/-Reset, X-RateLimit-*, RateLimit) slows the fleet before a 429.
	// Ignore it where the headers describe another budget than the source's requests
	// spend (a per-endpoint or search quota). Default "honour".
	RateLimitHeaders string `yaml:"rate_limit_headers"`
	// MaxConcurrency caps in-flight requests fleet-wide. Default 4.
	MaxConcurrency int `yaml:"max_concurrency"`
	// Timeout bounds one HTTP request, body included. Default 30s.
	Timeout Duration `yaml:"timeout"`
	// MaxBody is the largest response body accepted, after decompression. Default 64MiB.
	MaxBody ByteSize `yaml:"max_body"`
	// AllowPrivate lets base_url and redirects reach loopback and private addresses.
	// Default false.
	AllowPrivate bool `yaml:"allow_private"`
	// AllowHosts are host names, IP addresses or CIDR prefixes the source may
	// reach even where the address guard refuses them (link-local, metadata
	// addresses, or private ones without allow_private). Default none.
	AllowHosts []string `yaml:"allow_hosts"`
	// Resources are the collections synced from this source. At least one.
	Resources []Resource `yaml:"resources"`
}

// Auth says how to authenticate to a source. Secrets are read from the
// environment or a file at request time, never stored in the config.
type Auth struct {
	// Type is bearer | header | query | basic | oauth2. Required.
	Type string `yaml:"type"`
	// TokenEnv names the environment variable holding the token (bearer, header, query).
	TokenEnv string `yaml:"token_env"`
	// TokenFile names a file holding the token (bearer, header, query); an alternative to TokenEnv.
	TokenFile string `yaml:"token_file"`
	// Header is the header name for type header (for example X-Api-Key).
	Header string `yaml:"header"`
	// Param is the query parameter that carries the key for type query (for
	// example api_key). tidemark adds it to every request it sends, never
	// stores it (a next link the upstream echoes it in is stored without
	// it) and redacts it wherever a URL is shown.
	Param string `yaml:"param"`
	// UsernameEnv and PasswordEnv name the environment variables for type basic.
	UsernameEnv string `yaml:"username_env"`
	PasswordEnv string `yaml:"password_env"`

	// GrantType is the OAuth2 grant for type oauth2: client_credentials
	// (the client's own id and secret buy each access token) or
	// refresh_token (a refresh token, often rotated by the token endpoint
	// on every use, buys them). Required for type oauth2.
	GrantType string `yaml:"grant_type"`
	// TokenURL is the OAuth2 token endpoint access tokens are requested
	// from (type oauth2). It is reached through the same address guard as
	// base_url, and shown without its query.
	TokenURL string `yaml:"token_url"`
	// ClientIDEnv names the environment variable holding the OAuth2 client
	// id (type oauth2).
	ClientIDEnv string `yaml:"client_id_env"`
	// ClientSecretEnv names the environment variable holding the OAuth2
	// client secret (type oauth2; a public client of grant refresh_token
	// has none).
	ClientSecretEnv string `yaml:"client_secret_env"`
	// RefreshTokenEnv names the environment variable holding the initial
	// refresh token (grant refresh_token). A token the endpoint rotates is
	// stored encrypted in Postgres and wins over this one from then on,
	// until this variable is given a different token (a re-seed).
	RefreshTokenEnv string `yaml:"refresh_token_env"`
	// Scopes are requested with every token (the scope parameter, space
	// separated). Default none: the endpoint's default scopes.
	Scopes []string `yaml:"scopes"`
	// TokenParams are extra form parameters sent to the token endpoint
	// (for example audience). Never secrets: they are part of the config.
	// Default none.
	TokenParams map[string]string `yaml:"token_params"`
	// AuthStyle is how the client id and secret reach the token endpoint:
	// body (form parameters client_id and client_secret) or basic (an HTTP
	// Basic Authorization header, RFC 6749 section 2.3.1). Default body.
	AuthStyle string `yaml:"auth_style"`
}

// RateLimit is a GCRA rate: Requests per Per, with Burst extra.
type RateLimit struct {
	// Requests allowed per Per. Required, > 0.
	Requests int `yaml:"requests"`
	// Per is the period Requests are counted over. Required, > 0.
	Per Duration `yaml:"per"`
	// Burst defaults to 1.
	Burst int `yaml:"burst"`
}

// RateLimitHeaders values.
const (
	HeadersHonour = "honour"
	HeadersIgnore = "ignore"
)

// Priority values pick a resource's queue.
const (
	PriorityCritical = "critical"
	PriorityDefault  = "default"
	PriorityLow      = "low"
)

// Resource is one collection inside a source.
type Resource struct {
	// Name identifies the resource within its source: [a-z0-9_]+, unique per source.
	Name string `yaml:"name"`
	// Path is appended to the source's base_url; it may carry fixed query parameters.
	Path string `yaml:"path"`
	// Method is GET | POST, upper-cased on load. A POST sends body as JSON
	// (GraphQL, search endpoints). Default "GET".
	Method string `yaml:"method"`
	// Body is the JSON object a POST sends, as a template: a string that is
	// exactly "{cursor}", "{since}", "{until}" or "{limit}" becomes that
	// value as JSON (the cursor is null on a read's first page, the limit a
	// number), and inside a longer string each is replaced by its text
	// (JSON-escaped). {since} is the delta's lower bound in its format; a
	// read without one (a full read, a first sync without delta.start) has
	// null as a whole value, and the start of time (1970, or 0) inside a
	// longer string. {until} is a delta window's end. Only with method
	// POST. Default none.
	Body Body `yaml:"body"`
	// Priority is critical | default | low. Default "default".
	Priority string `yaml:"priority"`
	// Freshness is the target lag; beyond it the resource is stale. Default 5m.
	Freshness Duration `yaml:"freshness"`
	// Records says where the record array is and which field is the id.
	Records Records `yaml:"records"`
	// Fields, when set, stores this projection {column: dotted.path} instead of the raw record.
	Fields map[string]string `yaml:"fields"`
	// FieldTypes declares the type of view columns {column: type}, each
	// text | numeric | boolean | timestamptz | jsonb: a name of fields, or
	// without fields a top-level key of the records. Default: inferred from
	// the newest records when the view is made.
	FieldTypes map[string]string `yaml:"field_types"`
	// IgnoreFields are dotted paths left out of change detection (volatile fields).
	IgnoreFields []string `yaml:"ignore_fields"`
	// Pagination says how to walk the pages.
	Pagination Pagination `yaml:"pagination"`
	// Probe says how to detect a change cheaply.
	Probe Probe `yaml:"probe"`
	// Delta, when set, lets a fetch ask only for records changed since the watermark.
	Delta *Delta `yaml:"delta"`
	// FullSync is the periodic safety-net read of everything.
	FullSync FullSync `yaml:"full_sync"`
	// Audit says what the audit trail (record_changes) keeps of this resource.
	Audit Audit `yaml:"audit"`
	// Parent makes this a child resource: it is read once per live record
	// of another resource of the same source (a partition per parent), with
	// {parent.FIELD} in path (and a POST body) replaced by that record's field. Each
	// partition keeps its own watermark and checkpoint (a row in
	// sync_partitions), and a full read of a partition tombstones only that
	// partition's unseen records. Not with partitions. Default none.
	Parent *Parent `yaml:"parent"`
	// Partitions reads this resource once per value listed (accounts,
	// regions), with {partition} in path (and a POST body) replaced by the value; each
	// partition keeps its own state as with parent. Not with parent.
	// Default none.
	Partitions []string `yaml:"partitions"`
	// OnStatus maps an HTTP status (400-599, not 429) the upstream answers
	// a read or probe of this resource with to what it means: empty (the
	// collection is empty: a page without records and the last one), fail
	// (the run fails at once, no retries) or retry (transient: retried with
	// backoff). Default none: 4xx other than 408 fail at once, 408 and 5xx
	// are retried.
	OnStatus map[string]string `yaml:"on_status"`
}

// OnStatus actions.
const (
	OnStatusEmpty = "empty"
	OnStatusFail  = "fail"
	OnStatusRetry = "retry"
)

// StatusAction is the on_status action of an HTTP status for r, "" when none
// is configured.
func (r *Resource) StatusAction(code int) string {
	return r.OnStatus[strconv.Itoa(code)]
}

// Parent names the resource whose records a child resource is read under.
type Parent struct {
	// Resource is the parent resource, in the same source. Required. It may
	// itself be a child (repositories, their issues, the issues' comments),
	// but not this resource or one of its own children.
	Resource string `yaml:"resource"`
	// Key is the dotted field of the parent record that names the
	// partition (its value, as text). Default the parent's records.id.
	Key string `yaml:"key"`
	// ChangedOnly: a run visits only the partitions whose parent was
	// created or changed since the partition last synced, or that last
	// synced longer ago than full_sync.every; a run an operator asks for
	// (tidemark sync) visits every partition. Default false.
	ChangedOnly bool `yaml:"changed_only"`
	// DeleteWithParent tombstones a partition's records once its parent is
	// tombstoned (at the child's next run, which the parent's change
	// starts). Default true.
	DeleteWithParent *bool `yaml:"delete_with_parent"`
}

// Partitioned reports whether r is read per partition (parent or partitions).
func (r *Resource) Partitioned() bool { return r.Parent != nil || len(r.Partitions) > 0 }

// Records locates the records in a response body.
type Records struct {
	// Path is the dotted path of the array in the body; "" means the body is the array.
	Path string `yaml:"path"`
	// ID is the dotted path of the unique id inside a record. Required.
	ID string `yaml:"id"`
	// Item is the dotted path of the record inside each element of the
	// array, for arrays that wrap their records (GraphQL connections'
	// edges: item node). id, fields, ignore_fields and delta.field are
	// then read inside it. Default "": the element is the record.
	Item string `yaml:"item"`
}

// Body is a request body template (Resource.Body): a JSON object written
// in YAML.
type Body map[string]any

// Request methods of a resource's read.
const (
	MethodGet  = "GET"
	MethodPost = "POST"
)

// Post reports whether the resource is read with POST requests.
func (r *Resource) Post() bool { return r.Method == MethodPost }

// Pagination styles.
const (
	PaginationNone    = "none"
	PaginationPage    = "page"
	PaginationOffset  = "offset"
	PaginationCursor  = "cursor"
	PaginationLink    = "link"
	PaginationNextURL = "next_url"
)

// Where the cursor style's next cursor comes from (Pagination.CursorFrom).
const (
	CursorFromResponse   = "response"
	CursorFromLastRecord = "last_record"
)

// Pagination describes how a resource's pages are walked.
type Pagination struct {
	// Style is none | page | offset | cursor | link | next_url. Default none.
	Style string `yaml:"style"`
	// CursorParam is the query parameter that carries the cursor token
	// (cursor style). Required with method GET; with POST the cursor goes in
	// the body's {cursor}, and in this parameter too when it is set.
	CursorParam string `yaml:"cursor_param"`
	// CursorFrom is where the cursor style's next cursor comes from:
	// response (the response field next_field) or last_record (the id of the
	// page's last record, as Stripe's starting_after wants; the read ends at
	// an empty page, or where has_more_field says). Default response.
	CursorFrom string `yaml:"cursor_from"`
	// NextField is the dotted response field holding the next cursor (cursor style,
	// cursor_from response) or the next URL (next_url style; default "next_url").
	NextField string `yaml:"next_field"`
	// LimitParam carries the page size, if the API takes one.
	LimitParam string `yaml:"limit_param"`
	// Limit is the page size sent in LimitParam. Default 100.
	Limit int `yaml:"limit"`
	// PageParam carries the page number (page style). Default "page".
	PageParam string `yaml:"page_param"`
	// Start is the first page number (page style). Default 1.
	Start *int `yaml:"start"`
	// OffsetParam carries the offset (offset style). Default "offset".
	OffsetParam string `yaml:"offset_param"`
	// TotalField is the dotted response field holding how many records the
	// whole read returns (page and offset styles): the read ends once it
	// has that many. Without it or has_more_field, a page or offset read
	// ends at an empty page, or at a page shorter than the largest one the
	// upstream served before it (never at a page shorter than limit: an
	// upstream may serve fewer than asked). Default none.
	TotalField string `yaml:"total_field"`
	// HasMoreField is the dotted response field that is true while more
	// pages follow (page, offset and cursor styles: GraphQL's
	// pageInfo.hasNextPage, Stripe's has_more). Default none.
	HasMoreField string `yaml:"has_more_field"`
	// MaxPages bounds the pages of one read: a read that needs more fails
	// (a loop the pager cannot recognise, or a resource larger than this
	// allows). Default 100000.
	MaxPages int `yaml:"max_pages"`
	// ResumeWithin is how long an interrupted read's checkpoint stays
	// resumable; an older one starts the read over from its first page
	// (continuation tokens expire). Default 1h.
	ResumeWithin Duration `yaml:"resume_within"`
}

// Probe describes the cheap change check of a resource.
type Probe struct {
	// Strategy is etag | last_modified | hash | delta | rolling_hash | none.
	// delta (resources with a delta) reads the changes since the watermark
	// as the probe: one request per interval, busy or quiet. rolling_hash
	// hashes the next page of the full read in rotation, so that a change
	// deep in a collection without change metadata is seen within pages ×
	// interval. Default none.
	Strategy tidemark.ProbeStrategy `yaml:"strategy"`
	// Method is HEAD | GET (conditional GET), upper-cased on load. Default GET.
	Method string `yaml:"method"`
	// Every is the probe interval. Default 1m.
	Every Duration `yaml:"every"`
	// MaxEvery is the longest interval adaptive back-off reaches. Default Every.
	MaxEvery Duration `yaml:"max_every"`
	// Path is the request to probe; default the first page of the full read.
	Path string `yaml:"path"`
	// Limit is the page size of the probe's request, sent in
	// pagination.limit_param instead of pagination.limit, so that a GET probe
	// reads a small first page rather than a full one. Only for validators
	// that cover the whole collection or changes that show on the first
	// page (an envelope count, newest first); a hash or per-page validator
	// of a smaller page misses changes beyond it. Default the full read's
	// page size.
	Limit int `yaml:"limit"`
}

// Watermark formats.
const (
	FormatRFC3339 = "rfc3339"
	FormatUnix    = "unix"
	FormatUnixMS  = "unix_ms"
	// FormatNumber is a number that only grows, such as an append-only
	// collection's id: the delta asks for what comes after it.
	FormatNumber = "number"
)

// Delta describes the incremental read by a watermark.
type Delta struct {
	// Param is the query parameter carrying the watermark. Required with
	// method GET; a POST carries it in the body's {since} instead.
	Param string `yaml:"param"`
	// Field is the dotted record field the watermark is taken from. Required.
	Field string `yaml:"field"`
	// Format is rfc3339 | unix | unix_ms | number. Default rfc3339.
	Format string `yaml:"format"`
	// Overlap re-reads this much before the watermark (time formats only). Default 0.
	Overlap Duration `yaml:"overlap"`
	// ClockSkew is how far record cursors may run ahead of the upstream's
	// Date header (servers with clocks of their own): a read's watermark
	// stays this far behind the upstream's time when the read began, and a
	// cursor further ahead than that is reported as in the future (time
	// formats only). Default 5s.
	ClockSkew Duration `yaml:"clock_skew"`
	// Start is where a first sync (no watermark yet) begins: an RFC 3339
	// timestamp (2024-01-01T00:00:00Z) or a duration back from the moment
	// the read begins (720h), sent in the delta's format as the lower bound.
	// Once a watermark exists it is not used; full reads read everything
	// (but with window, from start). Time formats only. Default none: a
	// first sync reads everything.
	Start string `yaml:"start"`
	// Window walks a read in bounded time ranges, for APIs that require
	// them. Default none.
	Window *Window `yaml:"window"`
}

// Window makes a read walk [since, since+size), [since+size, since+2*size),
// ... until a window reaches past the moment the read began, each range
// read to its last page before the next. The checkpoint names the window a
// read is in, so an interrupted read resumes there; the watermark moves
// only when the whole read succeeds (never past the read's start less
// clock_skew). A record without the delta field is in no window: with
// full_sync.detect_deletes, use windows only on a field every record has
// (a creation time).
type Window struct {
	// Size is the length of one window. Required, > 0.
	Size Duration `yaml:"size"`
	// EndParam is the query parameter carrying a window's end (exclusive),
	// in the delta's format. Required with method GET; a POST carries it in
	// the body's {until} instead.
	EndParam string `yaml:"end_param"`
}

// FullSync is the periodic full read.
type FullSync struct {
	// Every is the full-sync interval. Default 24h.
	Every Duration `yaml:"every"`
	// DetectDeletes tombstones records the full read did not see. Default false.
	DetectDeletes bool `yaml:"detect_deletes"`
	// MaxDeleteFraction is the share of live records one full read may
	// tombstone: a read that would tombstone more holds its deletions, says
	// why on the run, raises a deletes.held event, and deletes them only
	// when the next full read agrees or an operator confirms (tidemark sync
	// SOURCE/RESOURCE --full --confirm-deletes). 1 turns the brake off.
	// Default 0.2.
	MaxDeleteFraction float64 `yaml:"max_delete_fraction"`
	// DeleteAfterReads is how many consecutive full reads must miss a
	// record before it is tombstoned: 2 waits for a second read to agree,
	// because page numbers and offsets shift when records are deleted during
	// a read and can hide a live record from it; 1 trusts one read. A read
	// of a single page is a snapshot and always counts as agreed. Default 1
	// for cursor and none pagination, 2 for page, offset, link and next_url.
	DeleteAfterReads int `yaml:"delete_after_reads"`
}

// Audit says what record_changes keeps of a resource. Updates and
// deletions are always audited one row per record.
type Audit struct {
	// InitialLoad is summary | records. The resource's first load (every
	// page applied before its first successful fetch) writes one
	// initial_load row per run with its count and the version hash
	// (summary), or one created row per record (records). Records created
	// later are always audited one by one. Default "summary".
	InitialLoad string `yaml:"initial_load"`
}

// Audit.InitialLoad values.
const (
	InitialLoadSummary = "summary"
	InitialLoadRecords = "records"
)

// ViewName is the name of the resource's typed view: {source}_{resource}.
func ViewName(source, resource string) string { return source + "_" + resource }

// Webhook is an outbound event subscription.
type Webhook struct {
	// URL receives a POST per event.
	URL string `yaml:"url"`
	// SecretEnv names the environment variable holding the signing secret:
	// deliveries are signed by the Standard Webhooks scheme (HMAC-SHA256);
	// a secret starting whsec_ is base64 after that prefix, any other is
	// used as it is.
	SecretEnv string `yaml:"secret_env"`
	// Events lists the event types delivered; empty means all.
	Events []tidemark.EventType `yaml:"events"`
}

// Duration is a time.Duration written as "5s", "1m30s" in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ByteSize is a size written as "64MiB", "512KB" or a plain number of bytes.
type ByteSize int64

// Source returns the source named name, or nil.
func (c *Config) Source(name string) *Source {
	for i := range c.Sources {
		if c.Sources[i].Name == name {
			return &c.Sources[i]
		}
	}
	return nil
}

// Resource returns the resource named name, or nil.
func (s *Source) Resource(name string) *Resource {
	for i := range s.Resources {
		if s.Resources[i].Name == name {
			return &s.Resources[i]
		}
	}
	return nil
}
