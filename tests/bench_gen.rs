//! The benchmark capture generator (`benches/tools`, issue 7) at a tiny size:
//! what it writes must analyse to exactly the calls it planned, complete,
//! without gaps, so the benchmark cannot silently measure a broken capture.

#[path = "../benches/tools/src/gencap.rs"]
mod gencap;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfwire::pipeline::Config;

use crate::support;
use gencap::{Format, Options, Profile, Summary};

fn generate(profile: Profile, format: Format, name: &str) -> (PathBuf, Summary) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench_gen")
        .join(name);
    let mut opts = Options::new(profile, root.join("fixtures"), out.clone());
    opts.format = format;
    opts.size_bytes = 8 << 20;
    opts.packets = 20_000;
    let summary = gencap::generate(&opts).unwrap_or_else(|e| panic!("generate {name}: {e}"));
    (out, summary)
}

fn check(path: &Path, s: &Summary) {
    assert!(s.connections >= 2, "{s:?}");
    let ex = support::analyze(&[path.to_path_buf()], Config::default());
    assert_eq!(ex.len() as u64, s.exchanges, "exchanges; {s:?}");
    let grpc = ex.iter().filter(|e| e.stream.is_some()).count() as u64;
    assert_eq!(grpc, s.grpc_exchanges, "gRPC calls");
    let failed = ex.iter().filter(|e| !e.status.ok).count() as u64;
    assert_eq!(failed, s.failed, "failed exchanges");
    let ia = ex.iter().filter(|e| e.status.grpc_code == Some(3)).count() as u64;
    assert_eq!(ia, s.invalid_argument, "INVALID_ARGUMENT calls");
    let incomplete: Vec<u64> = ex.iter().filter(|e| !e.complete).map(|e| e.id).collect();
    assert!(incomplete.is_empty(), "incomplete exchanges {incomplete:?}");
    let conns: BTreeSet<u64> = ex.iter().map(|e| e.connection).collect();
    assert_eq!(conns.len() as u64, s.connections, "connections");
}

#[test]
fn small_profile_analyses_to_the_planned_calls() {
    let (path, s) = generate(Profile::Small, Format::Pcap, "small.pcap");
    assert!(s.packets >= 15_000 && s.packets <= 25_000, "{s:?}");
    assert!(s.cloned_calls > s.exchanges / 2, "{s:?}");
    // About 5% INVALID_ARGUMENT.
    let pct = s.invalid_argument * 100 / s.exchanges;
    assert!((4..=6).contains(&pct), "{pct}% INVALID_ARGUMENT: {s:?}");
    check(&path, &s);
}

#[test]
fn large_profile_analyses_to_the_planned_calls() {
    let (path, s) = generate(Profile::Large, Format::Pcapng, "large.pcapng");
    assert!(s.file_bytes >= 6 << 20 && s.file_bytes <= 16 << 20, "{s:?}");
    assert!(s.largest_request >= 3_000_000, "{s:?}");
    check(&path, &s);
}
