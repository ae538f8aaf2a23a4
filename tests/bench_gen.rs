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

/// `benches/run.sh --help` prints its header and a mistyped profile fails at
/// once (exit 2), both before any apt-get or cargo build: stand-ins for those
/// earlier on PATH record whether they ran.
#[cfg(unix)]
#[test]
fn bench_script_checks_its_arguments_first() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    let dir = std::env::temp_dir().join(format!("tfwire-bench-args-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ran = dir.join("ran");
    for tool in ["cargo", "apt-get"] {
        let path = dir.join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho {tool} >> '{}'\nexit 1\n", ran.display()),
        )
        .expect("stand-in");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/run.sh");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(&script)
            .args(args)
            .env("PATH", &path)
            .output()
            .expect("run benches/run.sh")
    };

    for help in ["--help", "-h"] {
        let out = run(&["small", help]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{help}: {text}");
        assert!(text.contains("benches/run.sh small"), "{help}: {text}");
        assert!(text.contains("LARGE_MB=1024"), "{help}: {text}");
        assert!(
            !text.contains("set -euo"),
            "{help}: only the header: {text}"
        );
    }
    let out = run(&["smal"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown profile 'smal'"), "{err}");

    let ran_tools = std::fs::read_to_string(&ran).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ran_tools.is_empty(),
        "ran before checking arguments: {ran_tools}"
    );
}
