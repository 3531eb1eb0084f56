package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
)

// asynqLogger routes asynq's own log lines through slog.
type asynqLogger struct{ log *slog.Logger }

// NewAsynqLogger adapts log to asynq's Logger interface.
func NewAsynqLogger(log *slog.Logger) interface {
	Debug(args ...any)
	Info(args ...any)
	Warn(args ...any)
	Error(args ...any)
	Fatal(args ...any)
} {
	return asynqLogger{log.With("component", "asynq")}
}

func (l asynqLogger) emit(level slog.Level, args []any) {
	l.log.Log(context.Background(), level, fmt.Sprint(args...))
}

func (l asynqLogger) Debug(args ...any) { l.emit(slog.LevelDebug, args) }
func (l asynqLogger) Info(args ...any)  { l.emit(slog.LevelInfo, args) }
func (l asynqLogger) Warn(args ...any)  { l.emit(slog.LevelWarn, args) }
func (l asynqLogger) Error(args ...any) { l.emit(slog.LevelError, args) }

// Fatal is only called by asynq when it cannot go on; it exits like asynq's
// default logger would.
func (l asynqLogger) Fatal(args ...any) {
	l.emit(slog.LevelError, args)
	os.Exit(1)
}
