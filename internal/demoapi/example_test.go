package demoapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/tidemark/tidemark/internal/demoapi"
)

func ExampleNew() {
	api := demoapi.New(demoapi.Options{Seed: 1, Records: 3})
	srv := httptest.NewServer(api)
	defer srv.Close()

	res, err := api.Mutate(demoapi.Mutation{Resource: "ticket_sales", Creates: 1, Deletes: 1, IDs: []string{"ts_000002"}})
	if err != nil {
		panic(err)
	}
	fmt.Println("created", res.Created, "deleted", res.Deleted)

	resp, err := http.Get(srv.URL + "/v1/ticket_sales?limit=2")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var page struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
		HasMore    bool    `json:"has_more"`
		NextCursor *string `json:"next_cursor"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		panic(err)
	}
	fmt.Println(page.Data[0].ID, page.Data[1].ID, page.HasMore, *page.NextCursor)
	fmt.Println("live:", api.Stats().Resources["ticket_sales"].Records)
	// Output:
	// created [ts_000004] deleted [ts_000002]
	// ts_000001 ts_000003 true ts_000003
	// live: 3
}
