package demoapi

import (
	"strconv"
	"strings"
	"time"
)

// Resources are the names of the demo resources, in a fixed order.
var Resources = []string{"ticket_sales", "inventory_movements", "transactions", "settlements", "tax_summaries"}

const (
	resTicketSales = iota
	resInventory
	resTransactions
	resSettlements
	resTaxSummaries
	numResources
)

// idPrefix is the prefix of each resource's string ids; inventory_movements
// has integer ids.
var idPrefix = [numResources]string{"ts_", "", "txn_", "stl_", "tax_"}

func resourceIndex(name string) int {
	for i, r := range Resources {
		if r == name {
			return i
		}
	}
	return -1
}

var (
	firstNames     = []string{"Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "John", "Radia", "Edsger", "Katherine", "Donald", "Hedy", "Tim", "Sophie", "Guido", "Anita", "Niklaus"}
	lastNames      = []string{"Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen", "Backus", "Perlman", "Dijkstra", "Johnson", "Knuth", "Lamarr", "Berners-Lee", "Wilson", "van Rossum", "Borg", "Wirth"}
	firstLower     = lowerAll(firstNames)
	lastLower      = lowerAll(lastNames)
	currencies     = []string{"EUR", "USD", "GBP", "CHF"}
	ticketStatuses = []string{"reserved", "paid", "checked_in", "transferred", "refunded"}
	warehouses     = []string{"AMS-1", "AMS-2", "BER-1", "LON-3", "NYC-2", "SFO-1"}
	colors         = []string{"BLK", "WHT", "RED", "BLU", "GRN"}
	reasons        = []string{"sale", "restock", "return", "adjustment", "transfer", "damage"}
	txnStatuses    = []string{"pending", "authorized", "captured", "settled", "refunded"}
	methods        = []string{"card", "sepa_debit", "ideal", "paypal", "bank_transfer"}
	stlStatuses    = []string{"pending", "in_transit", "paid_out"}
	jurisdictions  = []string{"NL", "DE", "FR", "GB", "ES", "IT", "US-CA", "US-NY"}
)

func lowerAll(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.ReplaceAll(strings.ToLower(s), " ", "")
	}
	return out
}

// codec renders and parses records. It is immutable after New.
type codec struct {
	seed  int64
	width int // zero padding of string ids
}

// appendID appends record i's external id as a bare string (no quotes).
func (c codec) appendID(b []byte, res, i int) []byte {
	if res == resInventory {
		return strconv.AppendInt(b, int64(i+1), 10)
	}
	b = append(b, idPrefix[res]...)
	return appendPadded(b, int64(i+1), c.width)
}

func (c codec) formatID(res, i int) string { return string(c.appendID(nil, res, i)) }

// parseID returns the index of the record with external id s (which need
// not exist): -1 when s is not an id of the resource.
func parseID(res int, s string) int {
	digits, ok := strings.CutPrefix(s, idPrefix[res])
	if !ok || digits == "" || len(digits) > 12 {
		return -1
	}
	n := 0
	for _, ch := range []byte(digits) {
		if ch < '0' || ch > '9' {
			return -1
		}
		n = n*10 + int(ch-'0')
	}
	if n < 1 {
		return -1
	}
	return n - 1
}

// appendRecord appends the JSON of one record as a listing serves it.
// requestID is only used by ticket_sales.
func (c codec) appendRecord(b []byte, res int, r row, requestID string) []byte {
	v := c.versionOf(res, r)
	switch res {
	case resTicketSales:
		return c.appendTicketSale(b, v, requestID)
	case resInventory:
		return c.appendMovement(b, v)
	case resTransactions:
		return c.appendTransaction(b, v)
	case resSettlements:
		return c.appendSettlement(b, v)
	case resTaxSummaries:
		return c.appendTaxSummary(b, v)
	}
	return b
}

// version is one version of one record, with the hashes its fields are
// drawn from.
type version struct {
	row
	res int
	id  int    // the record's number, from 1
	h0  uint64 // stable over the record's life
	hv  uint64 // changes with every version
}

// versionOf is r's current version of resource res.
func (c codec) versionOf(res int, r row) version {
	id := r.idx + 1
	return version{row: r, res: res, id: id, h0: hash(c.seed, res, id, 0), hv: hash(c.seed, res, id, r.ver)}
}

// cycle makes a field differ between consecutive versions, so that every
// update (hidden or not) really changes the content.
func (v version) cycle(list []string) string {
	return list[(v.h0+uint64(v.ver))%uint64(len(list))]
}

// appendTicketSale appends a ticket sale: its buyer, seat and price;
// requestID is the listing's meta.request_id.
func (c codec) appendTicketSale(b []byte, v version, requestID string) []byte {
	event := v.h0 % 5000
	b = append(b, `{"id":"`...)
	b = c.appendID(b, v.res, v.idx)
	b = append(b, `","event_id":"evt_`...)
	b = appendPadded(b, int64(event), 5)
	b = append(b, `","status":"`...)
	b = append(b, v.cycle(ticketStatuses)...)
	b = append(b, `","price":{"cents":`...)
	b = strconv.AppendInt(b, int64(1500+(v.hv>>8)%200*50), 10)
	b = append(b, `,"currency":"`...)
	b = append(b, currencies[mix(event)%uint64(len(currencies))]...)
	f, l := (v.h0>>16)%uint64(len(firstNames)), (v.h0>>24)%uint64(len(lastNames))
	b = append(b, `"},"buyer":{"name":"`...)
	b = append(b, firstNames[f]...)
	b = append(b, ' ')
	b = append(b, lastNames[l]...)
	b = append(b, `","email":"`...)
	b = append(b, firstLower[f]...)
	b = append(b, '.')
	b = append(b, lastLower[l]...)
	b = strconv.AppendInt(b, int64((v.h0>>32)%1000), 10)
	b = append(b, `@example.com"},"seat":"`...)
	b = append(b, byte('A'+(v.hv>>16)%26), '-')
	b = strconv.AppendInt(b, int64(1+(v.hv>>24)%40), 10)
	b = append(b, `","quantity":`...)
	b = strconv.AppendInt(b, int64(1+(v.hv>>32)%6), 10)
	b = append(b, `,"created_at":"`...)
	b = appendTime(b, v.created)
	b = append(b, `","updated_at":"`...)
	b = appendTime(b, v.upd)
	b = append(b, `","meta":{"request_id":"`...)
	b = append(b, requestID...)
	b = append(b, `"}}`...)
	return b
}

// appendMovement appends an inventory movement: an integer id, and a
// quantity that is negative unless restocked or returned.
func (c codec) appendMovement(b []byte, v version) []byte {
	reason := v.cycle(reasons)
	qty := int64(1 + (v.hv>>8)%24)
	if reason != "restock" && reason != "return" {
		qty = -qty
	}
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, int64(v.id), 10)
	b = append(b, `,"sku":"SKU-`...)
	b = appendPadded(b, int64(v.h0%20000), 5)
	b = append(b, '-')
	b = append(b, colors[(v.h0>>20)%uint64(len(colors))]...)
	b = append(b, `","warehouse":"`...)
	b = append(b, warehouses[(v.h0>>28)%uint64(len(warehouses))]...)
	b = append(b, `","quantity_delta":`...)
	b = strconv.AppendInt(b, qty, 10)
	b = append(b, `,"reason":"`...)
	b = append(b, reason...)
	b = appendStamps(b, "occurred_at", v)
	b = append(b, `"}`...)
	return b
}

// appendTransaction appends a payment transaction.
func (c codec) appendTransaction(b []byte, v version) []byte {
	b = append(b, `{"txn_id":"`...)
	b = c.appendID(b, v.res, v.idx)
	b = append(b, `","amount":"`...)
	b = appendCents(b, int64(100+v.h0%250000))
	b = append(b, `","currency":"`...)
	b = append(b, currencies[(v.h0>>20)%uint64(len(currencies))]...)
	b = append(b, `","status":"`...)
	b = append(b, v.cycle(txnStatuses)...)
	b = append(b, `","method":"`...)
	b = append(b, methods[(v.h0>>28)%uint64(len(methods))]...)
	b = append(b, `","customer_id":"cus_`...)
	b = appendPadded(b, int64((v.h0>>36)%100000), 5)
	b = appendStamps(b, "created_at", v)
	b = append(b, `"}`...)
	return b
}

// appendSettlement appends a settlement: its id nested in the settlement
// object, its count of transactions growing with each version.
func (c codec) appendSettlement(b []byte, v version) []byte {
	count := int64(10+v.h0%90) + int64(v.ver) - 1
	b = append(b, `{"settlement":{"id":"`...)
	b = c.appendID(b, v.res, v.idx)
	b = append(b, `","date":"`...)
	b = time.UnixMilli(v.created).UTC().AppendFormat(b, time.DateOnly)
	b = append(b, `"},"amount":`...)
	b = strconv.AppendInt(b, count*int64(500+(v.hv>>8)%20000), 10)
	b = append(b, `,"currency":"`...)
	b = append(b, currencies[(v.h0>>20)%uint64(len(currencies))]...)
	b = append(b, `","transactions":`...)
	b = strconv.AppendInt(b, count, 10)
	b = append(b, `,"status":"`...)
	b = append(b, v.cycle(stlStatuses)...)
	b = append(b, `"}`...)
	return b
}

// appendTaxSummary appends a quarterly tax summary, its amendment the version.
func (c codec) appendTaxSummary(b []byte, v version) []byte {
	created := time.UnixMilli(v.created).UTC()
	taxable := int64(100000 + v.h0%50000000)
	rate := int64(5 + (v.hv>>8)%20) // percent
	b = append(b, `{"id":"`...)
	b = c.appendID(b, v.res, v.idx)
	b = append(b, `","period":"`...)
	b = strconv.AppendInt(b, int64(created.Year()), 10)
	b = append(b, "-Q"...)
	b = strconv.AppendInt(b, int64((created.Month()-1)/3+1), 10)
	b = append(b, `","jurisdiction":"`...)
	b = append(b, jurisdictions[(v.h0>>20)%uint64(len(jurisdictions))]...)
	b = append(b, `","taxable_amount":"`...)
	b = appendCents(b, taxable)
	b = append(b, `","tax_due":"`...)
	b = appendCents(b, taxable*rate/100)
	b = append(b, `","amendment":`...)
	b = strconv.AppendInt(b, int64(v.ver)-1, 10)
	b = append(b, `,"updated_at":"`...)
	b = appendTime(b, v.upd)
	b = append(b, `"}`...)
	return b
}

// appendStamps appends the record's creation time under key and its
// updated_at, as string fields following a string field.
func appendStamps(b []byte, key string, v version) []byte {
	b = append(b, `","`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	b = appendTime(b, v.created)
	b = append(b, `","updated_at":"`...)
	return appendTime(b, v.upd)
}

// appendPadded appends n (>= 0) zero-padded to width digits.
func appendPadded(b []byte, n int64, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], n, 10)
	for range width - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

// appendCents appends minor units as a decimal with two places.
func appendCents(b []byte, cents int64) []byte {
	b = strconv.AppendInt(b, cents/100, 10)
	b = append(b, '.')
	return appendPadded(b, cents%100, 2)
}

// timeLayout is RFC 3339 with milliseconds, always UTC.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"

func appendTime(b []byte, ms int64) []byte {
	return time.UnixMilli(ms).UTC().AppendFormat(b, timeLayout)
}
