//! Integration tests: the real `consul-dns` binary on 127.0.0.1 with a free port, real `dig`,
//! and a Rust client on hickory-proto. One binary, one file per behaviour family.

mod cli;
mod config_file;
mod consul;
mod consul_agent;
mod consul_differential;
mod consul_errors;
mod db;
mod db_source;
mod deploy;
mod deploy_files;
mod deploy_wiring;
mod docs;
mod examples;
mod fake;
mod faults;
mod forward;
mod fuzz_corpus;
mod knot_differential;
mod kong;
mod layout;
mod ops;
mod oracle;
mod protocol;
mod readme;
mod rehearsal;
mod reload;
mod reload_checks;
mod robustness;
mod rrl;
mod spec;
mod support;
mod tcp_limits;
