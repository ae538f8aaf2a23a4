//! Sharded analysis (`--threads`): the same output for any number of threads,
//! on every fixture, on several files at once, on every output format, and on
//! mutated captures.

use std::path::PathBuf;

use tfwire::cli::{AnalyzeOptions, Format};
use tfwire::pipeline::Config;

use crate::hostile::{mutate, read, Rng, MUTATIONS};
use crate::support::fixture;

fn run(captures: &[PathBuf], threads: usize, format: Format, config: &Config) -> (u8, Vec<u8>) {
    let (status, out) = analyze(captures, threads, format, config);
    (status.expect("analyze"), out)
}

/// A mutated capture may be refused (exit 2): that must not depend on threads either.
fn try_run(captures: &[PathBuf], threads: usize) -> (Result<u8, String>, Vec<u8>) {
    analyze(captures, threads, Format::Jsonl, &Config::default())
}

fn analyze(
    captures: &[PathBuf],
    threads: usize,
    format: Format,
    config: &Config,
) -> (Result<u8, String>, Vec<u8>) {
    let opts = AnalyzeOptions {
        captures: captures.to_vec(),
        format,
        config: config.clone(),
        all: true,
        model_dirs: Vec::new(),
        signature_files: Vec::new(),
        progress: false,
        color: false,
        threads,
    };
    let mut out = Vec::new();
    let status = tfwire::analyze(&opts, &mut out).map_err(|e| e.0);
    (status, out)
}

fn captures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixture(""))
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    v.sort();
    v
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn every_fixture_gives_the_same_output_on_any_number_of_threads() {
    let all = captures();
    assert!(all.len() >= 10, "{all:?}");
    for path in &all {
        let one = run(
            std::slice::from_ref(path),
            1,
            Format::Jsonl,
            &Config::default(),
        );
        let ex = lines(&one.1);
        assert!(ex.len() > 1, "{path:?}: no exchanges");
        // Exchanges numbered in order, connections the Wireshark way.
        for (i, e) in ex[..ex.len() - 1].iter().enumerate() {
            assert_eq!(e["id"].as_u64(), Some(i as u64 + 1), "{path:?}");
            let conn = e["connection"].as_u64().expect("connection");
            let filter = e["wireshark_filter"].as_str().expect("filter");
            assert!(
                filter.starts_with(&format!("tcp.stream eq {conn}")),
                "{filter}"
            );
        }
        for threads in [2, 3, 7] {
            let many = run(
                std::slice::from_ref(path),
                threads,
                Format::Jsonl,
                &Config::default(),
            );
            assert_eq!(one.0, many.0, "{path:?} -j{threads}: exit status");
            assert!(
                one.1 == many.1,
                "{path:?}: -j{threads} output differs from -j1"
            );
        }
    }
}

#[test]
fn several_files_and_every_format_agree() {
    // One run over several captures: frames and connections continue across files.
    let files: Vec<PathBuf> = [
        "grpc_basic.pcapng",
        "rest_basic.pcapng",
        "grpc_midconn.pcapng",
        "protocol_mismatch.pcapng",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect();
    for format in [Format::Jsonl, Format::Summary] {
        let one = run(&files, 1, format, &Config::default());
        let two = run(&files, 2, format, &Config::default());
        assert!(one.1 == two.1, "{format:?}: -j2 differs from -j1");
    }
    let summary = lines(&run(&files, 4, Format::Summary, &Config::default()).1);
    let s = &summary[0];
    assert_eq!(s["capture"]["files"].as_array().map(Vec::len), Some(4));
    let connections = s["network"]["connections"].as_u64().expect("connections");
    let decoded = s["protocols"]["http2_connections"].as_u64().unwrap_or(0)
        + s["protocols"]["http1_connections"].as_u64().unwrap_or(0);
    assert!(connections >= decoded && decoded > 10, "{s}");
}

#[test]
fn mutated_captures_give_the_same_output_on_any_number_of_threads() {
    let dir = std::env::temp_dir().join(format!("tfwire-shard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut compared = 0;
    for (f, name) in ["grpc_concurrent.pcapng", "mixed_grpc_rest.pcapng"]
        .iter()
        .enumerate()
    {
        let bytes = read(name);
        for (k, m) in MUTATIONS.iter().enumerate() {
            for seed in 0..3 {
                let mut rng = Rng::new((f * 1000 + k * 100 + seed + 7) as u64);
                let path = dir.join(format!("{f}-{k}-{seed}.pcap"));
                std::fs::write(&path, mutate(&mut rng, &bytes, *m)).expect("write");
                let p = [path.clone()];
                let (one, two) = (try_run(&p, 1), try_run(&p, 3));
                assert_eq!(one.0, two.0, "{name} {m:?} seed {seed}");
                assert!(
                    one.1 == two.1,
                    "{name} {m:?} seed {seed}: -j3 differs from -j1"
                );
                compared += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(compared, 2 * MUTATIONS.len() * 3);
}
