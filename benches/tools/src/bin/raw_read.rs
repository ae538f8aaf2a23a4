//! The raw-read floor: pcap-parser iterating a capture and touching every
//! packet's bytes (an xor-fold), nothing else. Reads the file the way tfwire's
//! `CaptureReader` does (1 MiB buffer, refill on Incomplete).
//!
//! `raw_read FILE` prints `packets bytes xor seconds MB/s`.

use std::fs::File;
use std::process::ExitCode;
use std::time::Instant;

use pcap_parser::pcapng::Block;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};

fn fold(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        acc ^= u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    }
    for &b in chunks.remainder() {
        acc = acc.rotate_left(8) ^ u64::from(b);
    }
    acc
}

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: raw_read FILE");
        return ExitCode::from(2);
    };
    let t = Instant::now();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("raw_read: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut capacity = 1 << 20;
    let mut reader = match create_reader(capacity, file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("raw_read: {path}: {e:?}");
            return ExitCode::from(2);
        }
    };
    let (mut packets, mut bytes, mut acc) = (0u64, 0u64, 0u64);
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                let data = match &block {
                    PcapBlockOwned::Legacy(b) => Some(b.data),
                    PcapBlockOwned::NG(Block::EnhancedPacket(b)) => Some(b.data),
                    PcapBlockOwned::NG(Block::SimplePacket(b)) => Some(b.data),
                    _ => None,
                };
                if let Some(d) = data {
                    packets += 1;
                    bytes += d.len() as u64;
                    acc = fold(d, acc);
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    break;
                }
                if reader.position() == 0 && reader.data().len() >= capacity {
                    capacity *= 2;
                    if !reader.grow(capacity) {
                        eprintln!("raw_read: record too large");
                        return ExitCode::from(2);
                    }
                }
                if reader.refill().is_err() {
                    eprintln!("raw_read: read error");
                    return ExitCode::from(2);
                }
            }
            Err(e) => {
                eprintln!("raw_read: {path}: {e:?}");
                return ExitCode::from(2);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "{packets} {bytes} {acc:016x} {secs:.3} {:.1}",
        size as f64 / 1e6 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}
