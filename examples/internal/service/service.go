// Package service is the body shared by the example services (user, order): a small HTTP
// server that answers /<name>/hello with its instance id, registers itself with the local
// Consul agent once it listens (with an HTTP check on /health), and deregisters on shutdown,
// so Consul (and consul-dns) stop handing out its address before it stops answering.
package service

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config says who the instance is and where its agent is.
type Config struct {
	// Name is the Consul service name, also the first path segment it answers (/user/hello).
	Name string
	// ID is the instance id, unique per agent (SERVICE_ID; default <name>-<hostname>).
	ID string
	// Listen is the address the HTTP server binds (LISTEN; port 0 picks a free one).
	Listen string
	// Address is what Consul hands out for this instance (SERVICE_ADDRESS; default: the
	// local address this host reaches the agent from).
	Address string
	// Agent is the Consul agent's HTTP API (CONSUL_HTTP_ADDR, as Consul's own tools read it).
	Agent *url.URL
	// Token is the ACL token sent to the agent (CONSUL_HTTP_TOKEN; empty: none).
	Token string
	// CheckInterval is how often the agent calls /health (CHECK_INTERVAL).
	CheckInterval time.Duration
}

// FromEnv reads the configuration from the environment; name and listen are the defaults
// of the service at hand.
func FromEnv(name, listen string) (Config, error) {
	cfg := Config{Name: name, Listen: listen, CheckInterval: 5 * time.Second}
	if v := os.Getenv("SERVICE_NAME"); v != "" {
		cfg.Name = v
	}
	host, _ := os.Hostname()
	cfg.ID = cfg.Name + "-" + host
	if v := os.Getenv("SERVICE_ID"); v != "" {
		cfg.ID = v
	}
	if v := os.Getenv("LISTEN"); v != "" {
		cfg.Listen = v
	}
	cfg.Address = os.Getenv("SERVICE_ADDRESS")
	agent := os.Getenv("CONSUL_HTTP_ADDR")
	if agent == "" {
		agent = "http://127.0.0.1:8500"
	}
	if !strings.Contains(agent, "://") {
		agent = "http://" + agent // Consul's tools accept host:port too
	}
	u, err := url.Parse(agent)
	if err != nil || u.Host == "" {
		return cfg, fmt.Errorf("CONSUL_HTTP_ADDR %q is not an address like http://127.0.0.1:8500", agent)
	}
	cfg.Agent = u
	cfg.Token = os.Getenv("CONSUL_HTTP_TOKEN")
	if v := os.Getenv("CHECK_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("CHECK_INTERVAL %q is not a positive duration like 5s", v)
		}
		cfg.CheckInterval = d
	}
	return cfg, nil
}

// Run serves until ctx ends, registered with the agent for as long as it serves.
func Run(ctx context.Context, cfg Config, logger *log.Logger) error {
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	address := cfg.Address
	if address == "" {
		if address, err = outboundAddress(cfg.Agent.Host); err != nil {
			listener.Close()
			return err
		}
	}
	server := &http.Server{Handler: Handler(cfg.Name, cfg.ID), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	logger.Printf("listening addr=%s id=%s", listener.Addr(), cfg.ID)

	agent := Agent{Base: cfg.Agent, Token: cfg.Token, Client: &http.Client{Timeout: 5 * time.Second}}
	reg := Registration(cfg, address, port)
	for attempt := 1; ; attempt++ {
		err = agent.Register(ctx, reg)
		if err == nil {
			break
		}
		logger.Printf("registration failed (attempt %d): %v", attempt, err)
		select {
		case <-ctx.Done():
			return shutdown(server, served)
		case err := <-served:
			return fmt.Errorf("the HTTP server stopped: %w", err)
		case <-time.After(backoff(attempt)):
		}
	}
	logger.Printf("registered id=%s address=%s:%d agent=%s", cfg.ID, address, port, cfg.Agent)

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("the HTTP server stopped: %w", err)
	}
	// Out of Consul first, so no new traffic is routed here, then stop serving.
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := agent.Deregister(dctx, cfg.ID); err != nil {
		logger.Printf("deregistration failed: %v", err)
	} else {
		logger.Printf("deregistered id=%s", cfg.ID)
	}
	return shutdown(server, served)
}

func shutdown(server *http.Server, served chan error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := server.Shutdown(ctx); err != nil {
		return fmt.Errorf("the HTTP server did not stop cleanly: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func backoff(attempt int) time.Duration {
	d := time.Duration(attempt) * 500 * time.Millisecond
	if d > 5*time.Second {
		d = 5 * time.Second
	}
	return d
}

// outboundAddress is the local address the kernel picks to reach host (a UDP "connect"
// sends nothing): the instance's address on the network it shares with the agent.
func outboundAddress(host string) (string, error) {
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "8500")
	}
	conn, err := net.Dial("udp", host)
	if err != nil {
		return "", fmt.Errorf("cannot tell this instance's address towards %s (set SERVICE_ADDRESS): %w", host, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// Handler answers /<name>/hello with the instance id and /health with "ok".
func Handler(name, id string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/"+name+"/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, id)
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Healthcheck asks the local instance's /health once; for container healthchecks (the
// image has no curl).
func Healthcheck(listen string) error {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("LISTEN %q has no port: %w", listen, err)
	}
	if _, err := strconv.Atoi(port); err != nil || port == "0" {
		return fmt.Errorf("LISTEN %q needs a fixed port for the healthcheck", listen)
	}
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + net.JoinHostPort("127.0.0.1", port) + "/health")
	if err != nil {
		return fmt.Errorf("the service does not answer: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the service answered %s", resp.Status)
	}
	return nil
}
