//! Integration tests: the real `consul-dns` binary on 127.0.0.1 with a free port, real `dig`,
//! and a Rust client on hickory-proto. One binary, one file per behaviour family.

mod cli;
mod consul;
mod consul_agent;
mod consul_differential;
mod db;
mod db_source;
mod deploy;
mod deploy_files;
mod deploy_wiring;
mod docs;
mod examples;
mod fake;
mod forward;
mod fuzz_corpus;
mod kong;
mod layout;
mod ops;
mod oracle;
mod readme;
mod rehearsal;
mod reload;
mod robustness;
mod spec;
mod support;
