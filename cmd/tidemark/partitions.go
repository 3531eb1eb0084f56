package main

import (
	"cmp"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tidemark/tidemark/server"
	"github.com/tidemark/tidemark/store"
)

// printPartitionSummaries rolls up each partitioned resource's partitions
// under the status table.
func printPartitionSummaries(e env, views []server.ResourceView, now time.Time) {
	for _, v := range views {
		p := v.Partitions
		if p == nil {
			continue
		}
		oldest := "-"
		if p.OldestSuccess != nil {
			oldest = ago(now, *p.OldestSuccess) + " ago"
		}
		fmt.Fprintf(e.stdout, "%s/%s: %d partitions, %d failing, %d never synced, oldest partition sync %s (tidemark status %s/%s --partitions)\n",
			v.Source, v.Resource, p.Partitions, p.Failing, p.NeverSynced, oldest, v.Source, v.Resource)
	}
}

// partitionsPage is how many partitions printPartitions reads at a time.
const partitionsPage = 500

// printPartitions lists every partition of the partitioned resources
// shown, a keyset page at a time.
func printPartitions(e env, st *store.Store, views []server.ResourceView) error {
	now := time.Now()
	for _, v := range views {
		if v.Partitions == nil {
			continue
		}
		fmt.Fprintf(e.stdout, "\n%s/%s partitions:\n", v.Source, v.Resource)
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PARTITION\tRECORDS\tLAST SYNC\tWATERMARK\tETAG\tLAST RUN\tERROR")
		k := store.Key{Source: v.Source, Resource: v.Resource}
		for after := ""; ; {
			page, err := st.Partitions(e.ctx, k, after, partitionsPage)
			if err != nil {
				return err
			}
			for _, p := range page {
				last, run := "never", "-"
				if p.LastSuccessAt != nil {
					last = ago(now, *p.LastSuccessAt) + " ago"
				}
				if p.LastRunID != nil {
					run = fmt.Sprint(*p.LastRunID)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", p.Partition, p.Records, last, cmp.Or(p.Watermark, "-"), cmp.Or(p.ETag, "-"), run, cmp.Or(oneLine(p.LastError), "-"))
			}
			if len(page) < partitionsPage {
				break
			}
			after = page[len(page)-1].Partition
		}
		tw.Flush()
	}
	return nil
}

// printFirstLoads says, under the table, how each resource's first load is
// audited when it is one summary entry (audit.initial_load: summary).
func printFirstLoads(e env, views []server.ResourceView) {
	for _, v := range views {
		if v.FirstLoad != nil {
			fmt.Fprintf(e.stdout, "%s/%s: %s\n", v.Source, v.Resource, v.FirstLoad)
		}
	}
}
