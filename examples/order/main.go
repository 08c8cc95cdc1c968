// Command order is the example "order" service: GET /order/hello answers its instance id.
// It registers with the Consul agent at CONSUL_HTTP_ADDR as service "order".
package main

import "consul-dns/examples/internal/service"

func main() { service.Main("order", ":8003") }
