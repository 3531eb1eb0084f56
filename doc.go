// Package tidemark is the domain's vocabulary: the named string types that
// several packages share (run kinds, probe strategies, validator kinds,
// event types) and their values, defined once.
//
// Every value here is a wire value: it is stored in run rows and sync_state,
// carried in task payloads and events, and written in config files, so a
// value never changes once released. The package imports nothing of
// tidemark's; every other package may import it (the domain at the root, as
// in benbjohnson/wtf's standard package layout).
package tidemark
