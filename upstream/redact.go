package upstream

// Redact is the form of a request URL that may be shown anywhere (logs, run
// rows, the dashboard): without its query string, user info and fragment,
// which may carry tokens.
func Redact(rawURL string) string { return redact(rawURL) }
