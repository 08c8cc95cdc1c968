package service

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// Check is the HTTP check registered with the service (the agent runs it).
type Check struct {
	CheckID                        string
	Name                           string
	HTTP                           string
	Interval                       string
	Timeout                        string
	DeregisterCriticalServiceAfter string
}

// ServiceDefinition is the body of PUT /v1/agent/service/register.
type ServiceDefinition struct {
	ID      string
	Name    string
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	Check   Check
}

// Registration is the definition this instance registers: its address and port, and a
// check on /health that Consul calls every CheckInterval.
func Registration(cfg Config, address string, port int) ServiceDefinition {
	base := "http://" + net.JoinHostPort(address, strconv.Itoa(port))
	return ServiceDefinition{
		ID:      cfg.ID,
		Name:    cfg.Name,
		Address: address,
		Port:    port,
		Tags:    []string{"example"},
		Meta:    map[string]string{"instance": cfg.ID},
		Check: Check{
			CheckID:                        "service:" + cfg.ID,
			Name:                           cfg.Name + " /health",
			HTTP:                           base + "/health",
			Interval:                       cfg.CheckInterval.String(),
			Timeout:                        "2s",
			DeregisterCriticalServiceAfter: "1m",
		},
	}
}

// Agent talks to the local Consul agent's HTTP API.
type Agent struct {
	Base   *url.URL
	Token  string
	Client *http.Client
}

// Register puts the service definition into the agent's catalog.
func (a Agent) Register(ctx context.Context, def ServiceDefinition) error {
	body, err := json.Marshal(def)
	if err != nil {
		return err
	}
	return a.put(ctx, "/v1/agent/service/register", body)
}

// Deregister removes the instance (and its check) from the agent.
func (a Agent) Deregister(ctx context.Context, id string) error {
	return a.put(ctx, "/v1/agent/service/deregister/"+url.PathEscape(id), nil)
}

func (a Agent) put(ctx context.Context, path string, body []byte) error {
	u := *a.Base
	u.Path = path
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if a.Token != "" {
		req.Header.Set("X-Consul-Token", a.Token)
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return fmt.Errorf("the Consul agent at %s is unreachable: %w", a.Base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("the Consul agent answered %s to %s: %s", resp.Status, path, bytes.TrimSpace(msg))
	}
	return nil
}
