// Package discover works out how to sync an HTTP API from a few polite
// requests, and proposes the tidemark resource config for it with the
// evidence behind every choice.
//
// Given the URL of a collection endpoint, Discover finds the array of
// records and the id field, the pagination style (RFC 8288 Link, a next-URL
// or cursor field, page or offset parameters, each confirmed by reading a
// second page), the change validators (ETag, Last-Modified, HEAD, conditional
// GET), a delta filter parameter (confirmed by a filtered response that is a
// strict, consistent subset), volatile fields, and rate-limit headers. It
// sends only GET and HEAD, never more than Options.MaxRequests requests, and
// spaces them as the rate-limit headers it sees ask.
//
// Beside the live config it shows hints, commented out under what was seen:
// the auth a 401's WWW-Authenticate asks for (oauth2 with the token URL from
// RFC 9728 and RFC 8414 metadata where the challenge points at it, bearer or
// basic otherwise), a POST resource paging a GraphQL connection by its
// pageInfo, and child resources for the collections records link to on the
// same host (GitHub's comments_url) or the parent a shared *_id field names.
// Rate-limit headers the fleet honours are said so (rate_limit_headers).
//
// Where it cannot tell, it says so in the proposal and takes the safe
// choice: a full read instead of a delta, a hash probe instead of a
// validator. Where it cannot propose a config that would sync the whole
// collection (no records, no ids, not JSON, an error status, pages it cannot
// walk) it returns a *NotUnderstoodError saying what it found and what it
// needs.
package discover
