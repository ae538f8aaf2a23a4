//! Integration tests: one binary, a module per capability.

mod support;

mod alloc;
mod bench_gen;
mod cli;
mod diagnose;
mod fixtures;
mod hostile;
mod http2;
mod live;
mod midconn;
mod reassembly;
mod report;
mod rest;
mod shard;
