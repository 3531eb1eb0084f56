package ratelimit

// Abandon stops renewing the permit's lease without freeing its slot, as a
// killed worker would.
func (p *Permit) Abandon() {
	if p.release != nil {
		p.once.Do(func() { p.release(true) })
	}
}
