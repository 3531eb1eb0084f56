package migrations

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
)

// Digest is a hash of every migration file's name and contents: databases
// that Up migrated from empty under the same Digest have the same schema.
// Tests name their migrated template database by it (internal/testenv), so
// that a changed migration gets a new template.
func Digest() (string, error) {
	names, err := fs.Glob(files, "*.sql") // sorted
	if err != nil {
		return "", fmt.Errorf("migrations digest: %w", err)
	}
	h := sha256.New()
	for _, name := range names {
		b, err := fs.ReadFile(files, name)
		if err != nil {
			return "", fmt.Errorf("migrations digest: %w", err)
		}
		// Name and length before the contents: no two different sets of
		// files feed the hash the same bytes.
		fmt.Fprintf(h, "%s %d\n", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
