package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/tidemark/tidemark/config"
)

// ErrNotFound is returned when a row asked for does not exist.
var ErrNotFound = errors.New("not found")

// Store is tidemark's handle on Postgres. It is safe for concurrent use.
type Store struct {
	db *gorm.DB
	// url is where Listen opens its own connection.
	url string
}

// Open connects to the database at url and checks that it answers.
func Open(ctx context.Context, url string) (*Store, error) {
	db, err := gorm.Open(postgres.Open(url), &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true, // every write here is a single statement or an explicit transaction
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	s := &Store{db: db, url: url}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Close releases the connection pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Migrate runs up (migrations.Up) on the store's connection pool: the
// migrations package owns the schema, store the connection, and store
// imports no package of ours but config.
func (s *Store) Migrate(ctx context.Context, up func(context.Context, *sql.DB) error) error {
	db, err := s.db.DB()
	if err != nil {
		return err
	}
	return up(ctx, db)
}

// Key names one resource of one source.
type Key struct {
	Source   string
	Resource string
}

func (k Key) String() string { return k.Source + "/" + k.Resource }

func notFound(err error) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	return err
}

// DBForTests is the store's GORM handle, for tests (and the simulator) to
// set up and inspect rows no method of Store reads or writes. Production
// code goes through Store's methods: store is the one road to Postgres.
func (s *Store) DBForTests() *gorm.DB { return s.db }

// KeysOf lists the resources of a config, in file order.
func KeysOf(conf *config.Config) []Key {
	var keys []Key
	conf.Each(func(s *config.Source, r *config.Resource) {
		keys = append(keys, Key{Source: s.Name, Resource: r.Name})
	})
	return keys
}
