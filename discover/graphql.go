package discover

import (
	"cmp"
	"fmt"
	"net/url"
	"strings"

	"github.com/tidemark/tidemark/config"
	"github.com/tidemark/tidemark/extract"
)

// connection is a GraphQL (Relay) connection around the records: records at
// Path.nodes or Path.edges, and Path.pageInfo with endCursor and hasNextPage.
type connection struct {
	path      string
	endCursor any
	hasNext   bool
}

// graphQLConnection finds the connection the records are in, if any.
func graphQLConnection(doc any, recPath string) (connection, bool) {
	dot := strings.LastIndex(recPath, ".")
	if dot < 0 || (recPath[dot+1:] != "nodes" && recPath[dot+1:] != "edges") {
		return connection{}, false
	}
	conn := recPath[:dot]
	v, _ := extract.Lookup(doc, conn+".pageInfo")
	info, ok := v.(map[string]any)
	if !ok {
		return connection{}, false
	}
	end, okEnd := info["endCursor"]
	hasNext, okHas := info["hasNextPage"].(bool)
	if !okEnd || !okHas {
		return connection{}, false
	}
	return connection{path: conn, endCursor: end, hasNext: hasNext}, true
}

// graphQLHint proposes the POST resource that pages the connection by its
// cursor: tidemark reads GraphQL with the query in a POST body whose
// {cursor} is the previous page's endCursor.
func (s *session) graphQLHint(c connection) {
	u, _ := url.Parse(s.url)
	query := u.Query().Get("query")
	how := "the query is a placeholder: write the one that lists the records"
	if query != "" {
		how = "the query is the URL's: give the connection the argument after: $cursor (declared as $cursor: String)"
	} else {
		query = "query($cursor: String) { ... " + lastSegment(c.path) + "(first: 100, after: $cursor) { nodes { id } pageInfo { endCursor hasNextPage } } }"
	}
	seen := fmt.Sprintf("%s.pageInfo is a GraphQL connection's page info: endCursor %s, hasNextPage %t; records at %s. "+
		"tidemark pages GraphQL by POST with the cursor in the body: %s", c.path, shown(c.endCursor), c.hasNext, s.recPath, how)
	vars := "{cursor: \"{cursor}\"}"
	s.hint(hintGraphQL, "medium", seen,
		"- name: "+q(cmp.Or(sanitize(lastSegment(c.path)), s.resource)),
		"  path: "+q(cmp.Or(u.Path, "/")),
		"  method: POST",
		"  body: "+flow("query", q(query), "variables", vars),
		"  records: "+graphQLRecords(s.recPath, s.id),
		"  pagination: "+flow("style", "cursor", "next_field", q(c.path+".pageInfo.endCursor"), "has_more_field", q(c.path+".pageInfo.hasNextPage")),
	)
}

// graphQLRecords locates a connection's records: the nodes, or the node of
// each edge (records.item), so that what is stored is the record, not the
// edge around it.
func graphQLRecords(recPath, id string) string {
	if strings.HasSuffix(recPath, ".edges") {
		if inner, ok := strings.CutPrefix(id, "node."); ok {
			return flow("path", q(recPath), "item", "node", "id", q(inner))
		}
	}
	return flow("path", q(recPath), "id", q(id))
}

func lastSegment(path string) string { return path[strings.LastIndex(path, ".")+1:] }

// graphQLPagination proposes no pagination for a connection read by GET:
// its further pages need the cursor in a POST body (the graphql hint).
func (s *session) graphQLPagination() {
	s.res.Pagination.Style = config.PaginationNone
	if !s.conn.hasNext {
		s.note("pagination", "high", fmt.Sprintf("%s.pageInfo.hasNextPage is false: all %d records fit on one page", s.conn.path, len(s.ids1)))
		return
	}
	s.note("pagination", "low", fmt.Sprintf("%s.pageInfo.hasNextPage is true, and tidemark reads a GraphQL connection's further pages "+
		"by POST with the cursor in the body (the graphql hint below): as proposed here, only the first page is read", s.conn.path))
}
