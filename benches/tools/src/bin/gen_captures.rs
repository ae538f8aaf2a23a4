//! Generates the benchmark captures from the real fixture traffic.
//!
//! ```text
//! gen_captures --profile large|small [--out FILE] [--size-mb N] [--packets N]
//!              [--mss N] [--concurrency N] [--seed N] [--format pcap|pcapng]
//!              [--fixtures DIR] [--fail-percent N]
//! ```
//!
//! Defaults: `large` about 1024 MiB into `bench-data/large.pcap`, `small`
//! 5,000,000 packets into `bench-data/small.pcap`, MSS 1448. Prints one JSON
//! line: what was written and the counts an analysis must find (also written
//! next to the capture as `<file>.expect.json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use tfwire_bench::gencap::{generate, Format, Options, Profile};

fn usage() -> ExitCode {
    eprintln!(
        "usage: gen_captures --profile large|small [--out FILE] [--size-mb N] [--packets N] \
         [--mss N] [--concurrency N] [--seed N] [--format pcap|pcapng] [--fixtures DIR] \
         [--fail-percent N]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut profile = None;
    let mut rest: Vec<(String, String)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return usage();
        }
        let Some(value) = it.next() else {
            return usage();
        };
        if flag == "--profile" {
            profile = match value.as_str() {
                "large" => Some(Profile::Large),
                "small" => Some(Profile::Small),
                _ => return usage(),
            };
        } else {
            rest.push((flag, value));
        }
    }
    let Some(profile) = profile else {
        return usage();
    };
    let mut opts = Options::new(
        profile,
        root.join("fixtures"),
        root.join("bench-data")
            .join(format!("{}.pcap", profile.name())),
    );
    for (flag, value) in rest {
        let num = || value.parse::<u64>().ok();
        let ok = match flag.as_str() {
            "--out" => {
                opts.out = PathBuf::from(&value);
                true
            }
            "--fixtures" => {
                opts.fixtures = PathBuf::from(&value);
                true
            }
            "--size-mb" => num().map(|n| opts.size_bytes = n << 20).is_some(),
            "--packets" => num().map(|n| opts.packets = n).is_some(),
            "--mss" => num().map(|n| opts.mss = n as usize).is_some(),
            "--concurrency" => num()
                .map(|n| opts.concurrency = n.max(1) as usize)
                .is_some(),
            "--seed" => num().map(|n| opts.seed = n).is_some(),
            "--fail-percent" => num().map(|n| opts.fail_percent = n.min(100)).is_some(),
            "--format" => match value.as_str() {
                "pcap" => {
                    opts.format = Format::Pcap;
                    true
                }
                "pcapng" => {
                    opts.format = Format::Pcapng;
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            eprintln!("gen_captures: bad option {flag} {value}");
            return usage();
        }
    }
    let t = Instant::now();
    match generate(&opts) {
        Ok(s) => {
            let line = s.to_json(profile, &opts.out, t.elapsed().as_secs_f64());
            let mut expect = opts.out.clone().into_os_string();
            expect.push(".expect.json");
            if let Err(e) = std::fs::write(&expect, format!("{line}\n")) {
                eprintln!("gen_captures: {}: {e}", PathBuf::from(expect).display());
                return ExitCode::from(2);
            }
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_captures: {e}");
            ExitCode::from(2)
        }
    }
}
