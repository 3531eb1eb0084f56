package upstream

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidemark/tidemark/config"
)

// canary is a loopback listener that counts the connections it accepts:
// a refused request must leave it at zero.
type canary struct {
	ln    net.Listener
	conns atomic.Int64
}

func newCanary(t *testing.T, addr string) *canary {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &canary{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.conns.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return c
}

func (c *canary) port() string {
	_, p, _ := net.SplitHostPort(c.ln.Addr().String())
	return p
}

func testClient(t *testing.T, src *config.Source, opts Options) *Client {
	t.Helper()
	if src.Name == "" {
		src.Name = "s"
	}
	if src.BaseURL == "" {
		src.BaseURL = "http://example.invalid"
	}
	if src.Timeout == 0 {
		src.Timeout = config.Duration(5 * time.Second)
	}
	if opts.Getenv == nil {
		opts.Getenv = func(k string) string { return "tok-" + k }
	}
	c, err := New(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSSRFMatrix: with allow_private false, every way of writing a loopback,
// private or metadata address is refused with a *BlockedError before any
// connection is made, and so are schemes other than http and https.
func TestSSRFMatrix(t *testing.T) {
	t.Parallel()
	can := newCanary(t, "127.0.0.1:0")
	port := can.port()
	c := testClient(t, &config.Source{}, Options{})
	urls := []string{
		"http://127.0.0.1:" + port + "/",
		"http://127.1:" + port + "/",
		"http://2130706433:" + port + "/",
		"http://0x7f000001:" + port + "/",
		"http://0177.0.0.1:" + port + "/",
		"http://localhost:" + port + "/",
		"http://[::1]:" + port + "/",
		"http://[::ffff:127.0.0.1]:" + port + "/",
		"http://[64:ff9b::7f00:1]:" + port + "/",
		"http://[2002:7f00:1::]:" + port + "/",
		"http://0.0.0.0:" + port + "/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:169.254.169.254]/",
		"http://100.100.100.200/latest/meta-data/",
		"http://[fd00:ec2::254]/",
		"http://[fe80::1]/",
		"http://10.0.0.1/",
		"http://172.16.0.1/",
		"http://192.168.0.1/",
		"http://100.64.0.1/",
		"http://[fc00::1]/",
		"file:///etc/passwd",
		"gopher://127.0.0.1:" + port + "/_x",
		"ftp://127.0.0.1:" + port + "/",
	}
	for _, u := range urls {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			_, err := c.Do(context.Background(), http.MethodGet, u, nil)
			var be *BlockedError
			if !errors.As(err, &be) || !errors.Is(err, ErrBlocked) {
				t.Fatalf("err = %v (%T), want a *BlockedError", err, err)
			}
			if n := Requests(err); n != 1 {
				t.Errorf("a refused request was tried %d times, want 1 (never retried)", n)
			}
		})
	}
	t.Cleanup(func() {
		if n := can.conns.Load(); n != 0 {
			t.Errorf("the loopback canary accepted %d connections, want 0", n)
		}
	})
}

// TestAllowPrivate: allow_private reaches loopback but still not
// link-local or metadata addresses, however written.
func TestAllowPrivate(t *testing.T) {
	t.Parallel()
	can := newCanary(t, "127.0.0.1:0")
	c := testClient(t, &config.Source{AllowPrivate: true}, Options{})
	_, err := c.Do(context.Background(), http.MethodGet, "http://127.0.0.1:"+can.port()+"/", nil)
	if errors.Is(err, ErrBlocked) {
		t.Fatalf("loopback with allow_private: %v", err)
	}
	if can.conns.Load() == 0 {
		t.Error("allow_private: the loopback canary saw no connection")
	}
	for _, u := range []string{"http://169.254.169.254/", "http://[::ffff:a9fe:a9fe]/", "http://[fd00:ec2::254]/", "http://[64:ff9b::a9fe:a9fe]/"} {
		if _, err := c.Do(context.Background(), http.MethodGet, u, nil); !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "allow_hosts") {
			t.Errorf("%s with allow_private: err = %v, want blocked naming allow_hosts", u, err)
		}
	}
	if _, err := New(&config.Source{Name: "s", BaseURL: "file:///etc/passwd"}, Options{}); !errors.Is(err, ErrBlocked) {
		t.Errorf("file base_url: err = %v, want blocked", err)
	}
}

// TestDNSRebinding: the guard checks the address each connection really
// goes to, so a name that first resolves to an allowed address and then to
// loopback is refused on the second connection.
func TestDNSRebinding(t *testing.T) {
	t.Parallel()
	allowed, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this host: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "[]") }))
	srv.Listener = allowed
	srv.Start()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(allowed.Addr().String())
	var can *canary
	if ln, err := net.Listen("tcp", "127.0.0.1:"+port); err == nil {
		ln.Close()
		can = newCanary(t, "127.0.0.1:"+port)
	}

	answers := []net.IP{net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 1)}
	dns := fakeDNS(t, func(n int) net.IP { return answers[min(n, len(answers)-1)] })
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns)
	}}
	g, err := newGuard(false, []string{"127.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	tr := guardedTransport(g, resolver)
	c := testClient(t, &config.Source{}, Options{Transport: tr})
	u := "http://rebind.test.:" + port + "/"
	if _, err := c.Do(context.Background(), http.MethodGet, u, nil); err != nil {
		t.Fatalf("first answer 127.0.0.2 (allowed): %v", err)
	}
	tr.CloseIdleConnections()
	_, err = c.Do(context.Background(), http.MethodGet, u, nil)
	var be *BlockedError
	if !errors.As(err, &be) || be.Target != "127.0.0.1" {
		t.Fatalf("second answer 127.0.0.1: err = %v, want blocked at 127.0.0.1", err)
	}
	if can != nil && can.conns.Load() != 0 {
		t.Errorf("the canary on 127.0.0.1 accepted %d connections", can.conns.Load())
	}
}

// fakeDNS answers A queries with answer(n) for the nth A query (from 0) and
// AAAA queries with nothing. It returns its UDP address.
func fakeDNS(t *testing.T, answer func(n int) net.IP) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	n := 0
	go func() {
		buf := make([]byte, 512)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:m]
			if len(q) < 12 {
				continue
			}
			i := 12
			for i < len(q) && q[i] != 0 {
				i += int(q[i]) + 1
			}
			if i+5 > len(q) {
				continue
			}
			qtype := binary.BigEndian.Uint16(q[i+1:])
			question := q[12 : i+5]
			resp := make([]byte, 12, 64)
			copy(resp, q[:2])
			binary.BigEndian.PutUint16(resp[2:], 0x8180)
			binary.BigEndian.PutUint16(resp[4:], 1)
			resp = append(resp, question...)
			if qtype == 1 {
				mu.Lock()
				ip := answer(n).To4()
				n++
				mu.Unlock()
				binary.BigEndian.PutUint16(resp[6:], 1)
				resp = append(resp, 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4)
				resp = append(resp, ip...)
			}
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestRedirectPolicy: credentials stay with the origin, at most 5 redirects
// are followed, and a redirect cannot reach loopback without allow_private.
func TestRedirectPolicy(t *testing.T) {
	t.Parallel()
	type seen struct{ auth, key, cookie, referer string }
	var mu sync.Mutex
	got := map[string]seen{}
	record := func(name string, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		got[name] = seen{r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get("Cookie"), r.Header.Get("Referer")}
	}
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		record("other", r)
		fmt.Fprint(w, "[]")
	}))
	t.Cleanup(other.Close)
	var hops atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/away":
			http.Redirect(w, r, other.URL+"/landed", http.StatusFound)
		case r.URL.Path == "/here":
			http.Redirect(w, r, "/landed", http.StatusMovedPermanently)
		case r.URL.Path == "/file":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/loop"):
			hops.Add(1)
			http.Redirect(w, r, fmt.Sprintf("/loop%d", hops.Load()), http.StatusFound)
		default:
			record("origin", r)
			fmt.Fprint(w, "[]")
		}
	}))
	t.Cleanup(origin.Close)

	auths := []struct {
		name string
		auth *config.Auth
		hdr  func(seen) string
	}{
		{"bearer", &config.Auth{Type: config.AuthBearer, TokenEnv: "T"}, func(s seen) string { return s.auth }},
		{"custom header", &config.Auth{Type: config.AuthHeader, Header: "X-Api-Key", TokenEnv: "T"}, func(s seen) string { return s.key }},
	}
	for _, a := range auths {
		c := testClient(t, &config.Source{AllowPrivate: true, Auth: a.auth, Headers: map[string]string{"Cookie": "session=1"}}, Options{})
		ctx := context.Background()
		if _, err := c.Do(ctx, http.MethodGet, origin.URL+"/here?api_key=k", nil); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		s := got["origin"]
		mu.Unlock()
		if a.hdr(s) == "" || s.cookie == "" {
			t.Errorf("%s: a same-origin redirect dropped the credentials: %+v", a.name, s)
		}
		if _, err := c.Do(ctx, http.MethodGet, origin.URL+"/away?api_key=k", nil); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		s = got["other"]
		mu.Unlock()
		if s.auth != "" || s.key != "" || s.cookie != "" || s.referer != "" {
			t.Errorf("%s: a redirect to another host carried %+v, want no credentials and no Referer", a.name, s)
		}
	}

	c := testClient(t, &config.Source{AllowPrivate: true}, Options{})
	_, err := c.Do(context.Background(), http.MethodGet, origin.URL+"/loop", nil)
	if err == nil || !strings.Contains(err.Error(), "stopped after 5 redirects") {
		t.Errorf("redirect loop: err = %v", err)
	}
	if n := hops.Load(); n != 6 {
		t.Errorf("redirect loop: %d requests, want 6 (the first and 5 redirects)", n)
	}
	if _, err := c.Do(context.Background(), http.MethodGet, origin.URL+"/file", nil); !errors.Is(err, ErrBlocked) {
		t.Errorf("redirect to file://: err = %v, want blocked", err)
	}
}

// TestRedirectToLoopbackRefused: an allowed upstream (127.0.0.2, listed in
// allow_hosts) redirecting to loopback is refused without allow_private.
func TestRedirectToLoopbackRefused(t *testing.T) {
	t.Parallel()
	can := newCanary(t, "127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 on this host: %v", err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+can.port()+"/admin", http.StatusFound)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c := testClient(t, &config.Source{}, Options{AllowHosts: []string{"127.0.0.2"}})
	_, err = c.Do(context.Background(), http.MethodGet, srv.URL+"/x", nil)
	var be *BlockedError
	if !errors.As(err, &be) || be.Target != "127.0.0.1" || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("err = %v, want blocked: loopback", err)
	}
	if n := can.conns.Load(); n != 0 {
		t.Errorf("canary accepted %d connections", n)
	}
}

// TestBodyLimits: max_body counts decoded bytes whatever the encoding; an
// endless body stops at max_body; a trickling body stops at the timeout.
func TestBodyLimits(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	payload := []byte(`[` + strings.Repeat(`{"id":1},`, 100) + `{"id":2}]`)
	compress := func(enc string, b []byte) []byte {
		var buf bytes.Buffer
		var w interface {
			Write([]byte) (int, error)
			Close() error
		}
		switch enc {
		case "gzip":
			w = gzip.NewWriter(&buf)
		case "deflate":
			w = zlib.NewWriter(&buf)
		case "raw-deflate":
			w, _ = flate.NewWriter(&buf, flate.BestCompression)
		}
		_, _ = w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	// 1 GiB of zeros in about 1 MiB: one gzip member of 1 MiB of zeros,
	// repeated (a gzip stream may hold many members).
	member := func() []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(make([]byte, 1<<20))
		zw.Close()
		return buf.Bytes()
	}()
	bomb := bytes.Repeat(member, 1<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enc := r.URL.Query().Get("enc")
		switch r.URL.Path {
		case "/encoded":
			if r.Header.Get("Accept-Encoding") == "" {
				t.Error("no Accept-Encoding sent")
			}
			w.Header().Set("Content-Encoding", strings.TrimPrefix(enc, "raw-"))
			_, _ = w.Write(compress(enc, payload))
		case "/bomb":
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(bomb)
		case "/br":
			w.Header().Set("Content-Encoding", "br")
			_, _ = w.Write([]byte("xx"))
		case "/endless":
			chunk := bytes.Repeat([]byte("x"), 4096)
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case "/trickle":
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			for range 100 {
				if _, err := w.Write([]byte("x")); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-time.After(time.Second):
				case <-r.Context().Done():
					return
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	c := testClient(t, &config.Source{AllowPrivate: true, MaxBody: limit, Timeout: config.Duration(1500 * time.Millisecond)}, Options{})
	ctx := context.Background()

	for _, enc := range []string{"gzip", "deflate", "raw-deflate"} {
		resp, err := c.Do(ctx, http.MethodGet, srv.URL+"/encoded?enc="+enc, nil)
		if err != nil || !bytes.Equal(resp.Body, payload) || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s body: err %v, decoded %v", enc, err, resp != nil && bytes.Equal(resp.Body, payload))
		}
	}

	tests := []struct {
		name, path, want string
		maxTime          time.Duration
	}{
		{"gzip bomb", "/bomb", "exceeds max_body (65536 bytes, after gzip decompression)", time.Second},
		{"endless body", "/endless", "exceeds max_body (65536 bytes)", time.Second},
		{"unknown encoding", "/br", `unsupported Content-Encoding "br"`, time.Second},
		{"1 byte per second", "/trickle", "no complete response within the source's timeout (1.5s)", 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			_, err := c.Do(ctx, http.MethodGet, srv.URL+tt.path, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if d := time.Since(began); d > tt.maxTime {
				t.Errorf("took %s, want under %s", d, tt.maxTime)
			}
		})
	}
}

// TestBodyMemory: an oversize body costs about max_body bytes of
// allocation before it fails, not the doubling of a growing buffer. Not
// parallel: it reads the process's allocation counter.
func TestBodyMemory(t *testing.T) {
	const limit = 16 << 20
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	c := testClient(t, &config.Source{AllowPrivate: true, MaxBody: limit}, Options{})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := c.Do(context.Background(), http.MethodGet, srv.URL, nil)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "exceeds max_body") {
		t.Fatalf("err = %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2*limit {
		t.Errorf("an endless body allocated %d MiB before failing at max_body %d MiB, want under %d MiB",
			alloc>>20, limit>>20, 2*limit>>20)
	}
}
