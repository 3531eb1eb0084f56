package server

import "github.com/tidemark/tidemark/store"

// NewCauseForTest exposes newCause to the external tests.
func NewCauseForTest(s store.FailureStreak) *Cause { return newCause(s) }

// LagSeriesForTest exposes lagSeries to the external tests.
var LagSeriesForTest = lagSeries
