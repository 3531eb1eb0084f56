package store

import (
	"fmt"

	"gorm.io/gorm"
)

// seenXor is a page's part of its pass's seen XOR (sync_seen.live_xor):
// the XOR of the version hash's per-record parts of its records, or nil
// when records were set aside (their content hashes are unknown).
func seenXor(records []Record, aside []Rejected) any {
	if len(aside) > 0 {
		return nil
	}
	var d liveDelta
	for _, r := range records {
		d.add(r.ExternalID, r.Hash)
	}
	return d.xor
}

// sawEveryLiveRecord tells whether a full read saw every live record of
// its resource, without the anti-join of the resource against its
// seen-set: when the pass's pages hold as many ids as the resource has
// live records, and the XOR of their (id, content hash) parts equals the
// live records' (sync_state.live_xor, which every write keeps), the pages
// held exactly the live records. A live record the read did not see would
// have to be made up for, in count and in XOR, by records seen twice or not
// stored, which happens only by a 64-bit collision (the version hash's own
// odds). It reads the state row under lock, so no write slips in before the
// end commits. Partitions keep no live XOR of their own: false.
func sawEveryLiveRecord(tx *gorm.DB, f FullRead, seen int64) (bool, error) {
	if f.Partition != "" || seen == 0 {
		return false, nil
	}
	var all bool
	err := tx.Raw(`SELECT coalesce(s.live_count = ? AND s.live_xor = (
			SELECT CASE WHEN count(*) = count(x.live_xor) THEN bit_xor(x.live_xor) END
			FROM sync_seen x WHERE x.pass_id = ?), false)
		FROM sync_state s WHERE s.source = ? AND s.resource = ? FOR UPDATE`,
		seen, f.PassID, f.Source, f.Resource).Scan(&all).Error
	if err != nil {
		return false, fmt.Errorf("compare the seen-set with the live records: %w", err)
	}
	return all, nil
}

// nothingUnseen ends a full read that saw every live record
// (sawEveryLiveRecord) as tombstoneUnseen would with nothing unseen: it
// tombstones nothing, and no deletion is pending any more.
func nothingUnseen(tx *gorm.DB, f FullRead) (FullReadResult, error) {
	var res FullReadResult
	if err := tx.Raw(`SELECT live_count FROM sync_state WHERE source = ? AND resource = ?`, f.Source, f.Resource).Scan(&res.Live).Error; err != nil {
		return res, err
	}
	pending, pendingArgs := pendingOf(f.Key, f.Partition)
	if err := tx.Exec(`DELETE FROM pending_deletes p WHERE `+pending, pendingArgs...).Error; err != nil {
		return res, err
	}
	return res, tx.Exec(`UPDATE sync_runs SET deletes_held = `+heldExpr(f.Partition)+` WHERE id = ?`, 0, f.RunID).Error
}
