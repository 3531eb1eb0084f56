// Package oauth buys and shares the access tokens of sources with auth
// type oauth2. One worker of the fleet refreshes a token (under a Redis
// lock) while the others wait and read it from Redis; the token is cached
// there encrypted, until a margin before it expires; a refusal is shared
// the same way, so the waiting workers fail with its cause rather than
// each asking again. A refresh token the
// endpoint rotates is stored in Postgres, encrypted with AES-256-GCM under
// TIDEMARK_SECRET_KEY, so that a restart goes on with it. Tokens
// implements upstream.Tokens: upstream never sees Redis or the store.
package oauth
