package store

import (
	"context"

	"gorm.io/gorm"
)

// exec runs a hand-written statement ($n placeholders) on db's connection
// (in a transaction, the transaction's) as written, and reports how many
// rows it affected. GORM's Exec would rewrite ? placeholders and expand a
// slice argument into a list of scalars, where pgx sends it as one array.
func exec(ctx context.Context, db *gorm.DB, query string, args ...any) (int64, error) {
	res, err := db.Statement.ConnPool.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
