-- +goose Up
-- The refresh token of an OAuth2 source (auth grant_type refresh_token)
-- once its token endpoint has rotated it: the environment's token is dead
-- by then, and a restart must go on with the new one. Encrypted with
-- AES-256-GCM under TIDEMARK_SECRET_KEY (the source name is the
-- additional data, so a row copied to another source does not decrypt);
-- plaintext never lands here. seed_sha256 is the SHA-256 of the
-- environment's refresh token the row descends from: an operator who puts
-- a different token in the environment (a re-seed) makes it win again.
CREATE TABLE oauth_tokens (
    source            text PRIMARY KEY,
    refresh_token_enc bytea NOT NULL,
    seed_sha256       text NOT NULL,
    rotated_at        timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE oauth_tokens;
