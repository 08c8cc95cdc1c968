// Command user is the example "user" service: GET /user/hello answers its instance id.
// It registers with the Consul agent at CONSUL_HTTP_ADDR as service "user".
package main

import "consul-dns/examples/internal/service"

func main() { service.Main("user", ":8002") }
