module consul-dns/examples

go 1.19
