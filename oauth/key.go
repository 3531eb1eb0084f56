package oauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeyEnv is the environment variable the secret key is read from.
const KeyEnv = "TIDEMARK_SECRET_KEY"

// ErrNoKey is returned where a token would have to be stored without a key
// to encrypt it with.
var ErrNoKey = errors.New(KeyEnv + " is not set")

// ParseKey reads a secret key: 32 bytes, written as 64 hex digits
// (openssl rand -hex 32) or in base64 (openssl rand -base64 32). "" is
// ErrNoKey.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, ErrNoKey
	}
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	return nil, fmt.Errorf("%s: want 32 random bytes as 64 hex digits (openssl rand -hex 32) or base64 (openssl rand -base64 32)", KeyEnv)
}

// sealer encrypts tokens with AES-256-GCM. The additional data binds a
// ciphertext to where it is kept (a source's row, a cache key), so that one
// copied elsewhere does not decrypt.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyEnv, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyEnv, err)
	}
	return &sealer{aead: aead}, nil
}

// seal is a random nonce followed by the ciphertext of plain.
func (s *sealer) seal(plain []byte, where string) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return s.aead.Seal(nonce, nonce, plain, []byte(where))
}

// errUndecryptable is a ciphertext that does not open with the key.
var errUndecryptable = errors.New("does not decrypt with " + KeyEnv)

func (s *sealer) open(sealed []byte, where string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errUndecryptable
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(where))
	if err != nil {
		return nil, errUndecryptable
	}
	return plain, nil
}
