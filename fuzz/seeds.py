#!/usr/bin/env python3
"""Writes the starting corpora of the fuzz targets into fuzz/corpus/<target>/.

The fuzzer grows each corpus from these; `cargo fuzz cmin` keeps it small. Run from anywhere:
`python3 fuzz/seeds.py`. Files are named by their content's hash, so running it again adds
nothing that is already there."""

import hashlib
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent
CATALOG = (ROOT.parent / "config" / "services.toml").read_text()


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = ROOT / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)


def name_wire(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def query(name, qtype, qclass=1, flags=0x0100, edns=None, extra=b"", ancount=0):
    arcount = 1 if edns is not None else 0
    header = struct.pack(">HHHHHH", 0x1234, flags, 1, ancount, 0, arcount)
    body = name_wire(name) + struct.pack(">HH", qtype, qclass) + extra
    if edns is not None:
        size, do = edns
        body += b"\0" + struct.pack(">HHIH", 41, size, 0x8000 if do else 0, 0)
    return header + body


A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV, OPT, IXFR, AXFR, ANY = 1, 2, 5, 6, 12, 16, 28, 33, 41, 251, 252, 255
NAMES = [
    "user.service.consul", "_user._tcp.service.consul", "primary.user.service.consul",
    "v1.user.service.dc1.consul", "order.service.consul", "user.connect.consul",
    "user.ingress.consul", "node1.node.consul", "node1.node.dc1.consul", "consul",
    "7f000015.addr.dc1.consul", "21.0.0.127.in-addr.arpa", "missing.service.consul",
    "user.query.consul", "www.example.com", "user.service.alt.example", "USER.Service.CONSUL",
    "a.b.c.d.e.f.service.consul", "_user._v1.service.consul", "consul-server.node.consul",
]
for name in NAMES:
    for qtype in (A, AAAA, SRV, TXT, ANY, SOA, NS, PTR):
        packet = query(name, qtype)
        write("request", packet)
        write("respond", packet)
for name, qtype in [("user.service.consul", SRV), ("consul", SOA), ("www.example.com", A)]:
    write("respond", query(name, qtype, edns=(1232, True)))
    write("respond", query(name, qtype, edns=(4096, False)))
    write("respond", query(name, qtype, flags=0x0000))
    write("respond", query(name, qtype, qclass=3))
    write("respond", query(name, AXFR))
    write("respond", query(name, IXFR))
write("respond", query("version.bind", TXT, qclass=3))
write("respond", query("user.service.consul", A, extra=b"\xc0\x0c" + struct.pack(">HHIH", OPT, 512, 0, 0), ancount=1))
write("respond", query("user.service.consul", A, edns=(512, False))[:-3])

write("static_catalog", CATALOG)
write("static_catalog", 'datacenter = "dc1"\n[[services]]\nname = "web"\naddress = "127.0.0.9"\nport = 80\n')
write("static_catalog", json.dumps({
    "datacenter": "dc1",
    "nodes": [{"name": "n1", "address": "10.0.0.1", "meta": {"rack": "r1"}},
              {"name": "n2", "address": "fe80::1"}, {"name": "n3", "address": "db.example.com"}],
    "services": [
        {"name": "web", "node": "n1", "port": 80, "tags": ["v1"], "weights": {"passing": 3, "warning": 1}},
        {"name": "web", "id": "web-2", "node": "n2", "port": 81, "health": "warning"},
        {"name": "api", "address": "10.0.0.5", "port": 8080, "health": "critical"},
    ],
}))

node = {"Node": "n1", "Address": "10.0.0.1", "TaggedAddresses": {"lan_ipv4": "10.0.0.1", "wan": "192.0.2.1"},
        "Meta": {"rack": "r1"}, "CreateIndex": 5}
service = {"ID": "web-1", "Service": "web", "Kind": "", "Tags": ["v1"], "Address": "", "Port": 80,
           "TaggedAddresses": {"lan_ipv4": {"Address": "10.0.0.1", "Port": 80}},
           "Weights": {"Passing": 1, "Warning": 1}, "Proxy": None, "Connect": None}
proxy = dict(service, ID="web-proxy", Service="web-sidecar-proxy", Kind="connect-proxy", Port=21000,
             Proxy={"DestinationServiceName": "web"})
check = {"Node": "n1", "CheckID": "service:web-1", "Status": "critical", "ServiceID": "web-1", "ModifyIndex": 9}
bodies = [
    (0, {"consul": [], "web": ["v1"], "web-sidecar-proxy": None}),
    (1, [node, dict(node, Node="n2", Address="10.0.0.2", CreateIndex=6)]),
    (2, [check]),
    (3, [{"Node": node, "Service": service, "Checks": [dict(check, Status="passing")]}]),
    (3, [{"Node": node, "Service": proxy, "Checks": []}]),
    (4, [{"Name": "gw", "Listeners": [{"Protocol": "http", "Services": [{"Name": "web"}]}]}]),
    (5, {"Config": {"Datacenter": "dc1", "NodeName": "n1"}}),
]
write("consul_bodies", b"\xff".join(bytes([k]) + json.dumps(b).encode() for k, b in bodies))
for kind, body in bodies:
    write("consul_bodies", bytes([kind]) + json.dumps(body).encode())
write("consul_bodies", b"\x00null\xff\x01null\xff\x02[]\xff\x03null")

STATE = {
    "format": "consul-dns catalog", "version": 1, "datacenter": "dc1",
    "nodes": [{"name": "n1", "dc": "dc1", "address": "10.0.0.1", "meta": [["rack", "r1"]]}],
    "instances": [
        {"id": "web-1", "service": "web", "dc": "dc1", "node": "n1", "port": 80, "tags": ["v1"],
         "weights": [1, 1]},
        {"id": "api", "service": "api", "dc": "dc1", "address": "10.0.0.5", "ipv6": "fe80::5", "port": 81,
         "weights": [2, 1], "warning": True},
    ],
    "mesh": [{"ingress": False, "service": "web",
              "instance": {"id": "p", "service": "web-sidecar-proxy", "dc": "dc1", "node": "n1",
                           "port": 21000, "weights": [1, 1]}}],
}
write("persisted_state", json.dumps(STATE))
write("persisted_state", json.dumps(dict(STATE, version=2, saved_at=1764633600000, generation=42)))
