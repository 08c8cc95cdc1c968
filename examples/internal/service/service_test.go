package service

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// agentRecorder is an HTTP server standing in for the agent's two endpoints.
type agentRecorder struct {
	mu       sync.Mutex
	calls    []string
	defs     []ServiceDefinition
	failures int // answer 500 this many times first
}

func (a *agentRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.Method != http.MethodPut {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if a.failures > 0 {
		a.failures--
		http.Error(w, "No cluster leader", http.StatusInternalServerError)
		return
	}
	a.calls = append(a.calls, r.URL.Path)
	if r.URL.Path == "/v1/agent/service/register" {
		var def ServiceDefinition
		if err := json.NewDecoder(r.Body).Decode(&def); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.defs = append(a.defs, def)
	}
}

func (a *agentRecorder) snapshot() ([]string, []ServiceDefinition) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...), append([]ServiceDefinition(nil), a.defs...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegistersServesAndDeregisters(t *testing.T) {
	rec := &agentRecorder{failures: 2} // the agent is not ready at first: Run retries
	agent := httptest.NewServer(rec)
	defer agent.Close()
	base, _ := url.Parse(agent.URL)
	cfg := Config{Name: "user", ID: "user-7", Listen: "127.0.0.1:0", Agent: base, CheckInterval: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, log.New(io.Discard, "", 0)) }()

	waitFor(t, "the registration", func() bool { _, defs := rec.snapshot(); return len(defs) == 1 })
	_, defs := rec.snapshot()
	def := defs[0]
	if def.ID != "user-7" || def.Name != "user" || def.Address != "127.0.0.1" || def.Port == 0 {
		t.Fatalf("unexpected registration %+v", def)
	}
	if !strings.HasSuffix(def.Check.HTTP, "/health") || def.Check.Interval != "1s" {
		t.Fatalf("unexpected check %+v", def.Check)
	}
	for path, want := range map[string]string{"/health": "ok\n", "/user/hello": "user-7\n"} {
		resp, err := http.Get(strings.TrimSuffix(def.Check.HTTP, "/health") + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("%s: %d %q, want %q", path, resp.StatusCode, body, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	calls, _ := rec.snapshot()
	want := []string{"/v1/agent/service/register", "/v1/agent/service/deregister/user-7"}
	if strings.Join(calls, ",") != strings.Join(want, ",") {
		t.Fatalf("agent calls %v, want %v", calls, want)
	}
	if _, err := http.Get(def.Check.HTTP); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

func TestFromEnvRejectsBadValues(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "http://")
	if _, err := FromEnv("user", ":8002"); err == nil || !strings.Contains(err.Error(), "CONSUL_HTTP_ADDR") {
		t.Fatalf("bad agent address accepted: %v", err)
	}
	t.Setenv("CONSUL_HTTP_ADDR", "172.40.0.2:8500")
	t.Setenv("CHECK_INTERVAL", "soon")
	if _, err := FromEnv("user", ":8002"); err == nil || !strings.Contains(err.Error(), "CHECK_INTERVAL") {
		t.Fatalf("bad interval accepted: %v", err)
	}
	t.Setenv("CHECK_INTERVAL", "")
	t.Setenv("SERVICE_ID", "user-1")
	cfg, err := FromEnv("user", ":8002")
	if err != nil || cfg.Agent.String() != "http://172.40.0.2:8500" || cfg.ID != "user-1" {
		t.Fatalf("FromEnv = %+v, %v", cfg, err)
	}
}

func TestHealthcheckNeedsAFixedPort(t *testing.T) {
	if err := Healthcheck("127.0.0.1:0"); err == nil {
		t.Fatal("port 0 accepted")
	}
	srv := httptest.NewServer(Handler("order", "order-1"))
	defer srv.Close()
	if err := Healthcheck(strings.TrimPrefix(srv.URL, "http://")); err != nil {
		t.Fatal(err)
	}
}
