package upstream

// NextLink returns the target of rel="next" in RFC 8288 Link header values,
// or "": the one reading of Link headers, for the pager and for discover.
func NextLink(values []string) string { return nextLink(values) }

// ResolveLink makes a link (a Link target, a next-URL field) absolute
// against the URL it came from, refusing schemes other than http and https.
// Its error never quotes the link, which may carry an echoed credential.
func ResolveLink(base, ref string) (string, error) { return resolve(base, ref) }
