//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use tfwire::capture::{CaptureReader, LinkType};
use tfwire::pipeline::{Analyzer, Config};
use tfwire::tfserving::Exchange;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Runs the whole pipeline over capture files and returns every exchange.
pub fn analyze(paths: &[PathBuf], config: Config) -> Vec<Exchange> {
    let mut out = Vec::new();
    {
        let mut analyzer = Analyzer::new(config, |ex: Exchange| {
            out.push(ex);
            true
        });
        let mut frame = 1;
        for p in paths {
            let mut r = CaptureReader::open(p).expect("capture opens");
            frame = r.for_each_packet(frame, |pkt, _| analyzer.packet(pkt));
        }
        analyzer.finish();
    }
    out
}

/// Same, over capture bytes in memory.
#[allow(dead_code)]
pub fn analyze_bytes(bytes: Vec<u8>, config: Config) -> Vec<Exchange> {
    let mut out = Vec::new();
    {
        let mut analyzer = Analyzer::new(config, |ex: Exchange| {
            out.push(ex);
            true
        });
        if let Ok(mut r) = CaptureReader::from_reader("mem".into(), std::io::Cursor::new(bytes)) {
            r.for_each_packet(1, |pkt, _| analyzer.packet(pkt));
        }
        analyzer.finish();
    }
    out
}

pub fn tfwire_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tfwire"))
}

/// A captured packet held in memory, for tests that reorder, drop or cut.
pub struct Owned {
    pub link: LinkType,
    pub ts_ns: i64,
    pub data: Vec<u8>,
}

pub fn load(name: &str) -> Vec<Owned> {
    let mut r = CaptureReader::open(&fixture(name)).expect("fixture");
    let mut v = Vec::new();
    r.for_each_packet(1, |p, _| {
        v.push(Owned {
            link: p.link,
            ts_ns: p.ts_ns,
            data: p.data.to_vec(),
        })
    });
    v
}
