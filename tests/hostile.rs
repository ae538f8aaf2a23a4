//! Hostile and broken captures through the whole pipeline (capture → TCP →
//! HTTP/2 → gRPC → TF Serving → diagnosis → JSON): random and mutated
//! captures must not panic, must finish within a time budget, and must keep
//! memory bounded (DESIGN.md §5). Also: files cut inside a record, clocks
//! that jump backwards, and one capture given as two files.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use tfwire::capture::{CaptureReader, LinkType};
use tfwire::diagnose::{Engine, SignatureBook};
use tfwire::net::{ConnInfo, Delivery, Dir, FlowLimits, FlowSink, FlowTable};
use tfwire::pipeline::{Analyzer, Config};
use tfwire::tfserving::Exchange;

use crate::support::{fixture, tfwire_bin};

/// xorshift64*: small, deterministic, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }
}

/// What one run of the pipeline produced.
struct Run {
    exchanges: Vec<Exchange>,
    /// One entry per file: whether it opened, and its cut_short warning.
    files: Vec<Result<Option<String>, String>>,
    elapsed: Duration,
}

/// Runs capture files (in memory) through the pipeline and the diagnosis
/// engine, as `tfwire analyze a b …` does, and serialises every exchange.
fn analyze(files: &[&[u8]], config: Config) -> Run {
    let started = Instant::now();
    let mut engine = Engine::new(SignatureBook::new());
    let mut exchanges = Vec::new();
    let mut report = Vec::new();
    {
        let mut analyzer = Analyzer::new(config, |ex: Exchange| {
            engine.push(Box::new(ex), &mut |ex| {
                exchanges.push(*ex);
                true
            })
        });
        let mut frame = 1;
        for bytes in files {
            match CaptureReader::from_reader("mem".into(), Cursor::new(bytes)) {
                Ok(mut r) => {
                    frame = r.for_each_packet(frame, |p, _| analyzer.packet(p));
                    report.push(Ok(r.stats().cut_short.clone()));
                }
                Err(e) => report.push(Err(e.to_string())),
            }
        }
        analyzer.finish();
        let _ = (analyzer.net_stats(), analyzer.proto_stats());
    }
    engine.finish(&mut |ex| {
        exchanges.push(*ex);
        true
    });
    for ex in &exchanges {
        let line = serde_json::to_string(ex).expect("an exchange serialises");
        assert!(!line.contains('\n'));
    }
    Run {
        exchanges,
        files: report,
        elapsed: started.elapsed(),
    }
}

/// What must not change when a capture is split, re-timed or re-read.
fn essence(ex: &[Exchange]) -> Vec<String> {
    let mut v: Vec<String> = ex
        .iter()
        .map(|e| {
            format!(
                "{:?} {:?} {:?} {:?} {:?} {:?}",
                e.request_id,
                e.method,
                e.model,
                e.inputs
                    .iter()
                    .map(|i| (&i.name, &i.shape))
                    .collect::<Vec<_>>(),
                e.status.grpc_code,
                e.status.message
            )
        })
        .collect();
    v.sort();
    v
}

pub(crate) fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture")
}

// ---------------------------------------------------------------------------
// Capture files as records, and writing them back.

/// A record (pcap) or block (pcapng): where it starts and how long it is.
#[derive(Clone, Copy, Debug)]
struct Rec {
    start: usize,
    len: usize,
}

/// Splits a little-endian capture into its header and records.
fn records(bytes: &[u8]) -> (usize, Vec<Rec>) {
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let pcapng = bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]);
    let (header, mut at) = if pcapng { (0, 0) } else { (24, 24) };
    let mut recs = Vec::new();
    while at + 16 <= bytes.len() {
        let len = if pcapng {
            u32_at(at + 4) as usize
        } else {
            16 + u32_at(at + 8) as usize
        };
        if len == 0 || at + len > bytes.len() {
            break;
        }
        recs.push(Rec { start: at, len });
        at += len;
    }
    (header, recs)
}

fn rebuild(bytes: &[u8], header: usize, recs: &[Rec]) -> Vec<u8> {
    let mut out = bytes[..header].to_vec();
    for r in recs {
        out.extend_from_slice(&bytes[r.start..r.start + r.len]);
    }
    out
}

struct Owned {
    link: LinkType,
    ts_ns: i64,
    data: Vec<u8>,
    orig_len: u32,
}

fn packets(bytes: &[u8]) -> Vec<Owned> {
    let mut r = CaptureReader::from_reader("mem".into(), Cursor::new(bytes)).expect("capture");
    let mut v = Vec::new();
    r.for_each_packet(1, |p, _| {
        v.push(Owned {
            link: p.link,
            ts_ns: p.ts_ns,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
        })
    });
    v
}

/// A classic pcap (little endian, nanoseconds) of `pkts`.
fn write_pcap(pkts: &[Owned]) -> Vec<u8> {
    let link = pkts.first().map_or(1, |p| p.link.0);
    let mut v = Vec::new();
    v.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&262_144u32.to_le_bytes());
    v.extend_from_slice(&link.to_le_bytes());
    for p in pkts {
        let ts = p.ts_ns.max(0) as u64;
        v.extend_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
        v.extend_from_slice(&((ts % 1_000_000_000) as u32).to_le_bytes());
        v.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        v.extend_from_slice(&p.orig_len.to_le_bytes());
        v.extend_from_slice(&p.data);
    }
    v
}

// ---------------------------------------------------------------------------
// Byte-level mutations of whole capture files.

#[derive(Debug, Clone, Copy)]
pub(crate) enum Mutation {
    BitFlips,
    Insert,
    Delete,
    Truncate,
    DuplicateRecord,
    SwapRecords,
    DropRecords,
    HugeLength,
    SmallLength,
}

pub(crate) const MUTATIONS: [Mutation; 9] = [
    Mutation::BitFlips,
    Mutation::Insert,
    Mutation::Delete,
    Mutation::Truncate,
    Mutation::DuplicateRecord,
    Mutation::SwapRecords,
    Mutation::DropRecords,
    Mutation::HugeLength,
    Mutation::SmallLength,
];

pub(crate) fn mutate(rng: &mut Rng, bytes: &[u8], m: Mutation) -> Vec<u8> {
    let (header, recs) = records(bytes);
    let mut out = bytes.to_vec();
    let pick = |rng: &mut Rng| recs[rng.below(recs.len())];
    let pcapng = header == 0;
    match m {
        Mutation::BitFlips => {
            for _ in 0..1 + rng.below(16) {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
        }
        Mutation::Insert => {
            let at = rng.below(out.len());
            let n = 1 + rng.below(64);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            out.splice(at..at, junk);
        }
        Mutation::Delete => {
            let at = rng.below(out.len());
            let n = (1 + rng.below(64)).min(out.len() - at);
            out.drain(at..at + n);
        }
        Mutation::Truncate => {
            // Inside the file header, a record header, record data, or at a boundary.
            let r = pick(rng);
            let at = match rng.below(4) {
                0 => rng.below(header.max(28)),
                1 => r.start + rng.below(16),
                2 => r.start + 16 + rng.below(r.len.saturating_sub(16)),
                _ => r.start,
            };
            out.truncate(at.min(out.len()));
        }
        Mutation::DuplicateRecord => {
            let mut v = recs.clone();
            let i = rng.below(v.len());
            v.insert(i + rng.below(4).min(v.len() - i), v[i]);
            out = rebuild(bytes, header, &v);
        }
        Mutation::SwapRecords => {
            let mut v = recs.clone();
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(v.len());
                let j = (i + rng.below(6)).min(v.len() - 1);
                v.swap(i, j);
            }
            out = rebuild(bytes, header, &v);
        }
        Mutation::DropRecords => {
            let v: Vec<Rec> = recs.iter().copied().filter(|_| !rng.one_in(6)).collect();
            out = rebuild(bytes, header, &v);
        }
        Mutation::HugeLength | Mutation::SmallLength => {
            let r = pick(rng);
            // pcap: caplen at +8 (and origlen at +12); pcapng: block length at +4
            // (or, in an EPB, the captured length at +20).
            let field = if pcapng {
                if rng.one_in(2) {
                    r.start + 4
                } else {
                    r.start + 20
                }
            } else {
                r.start + 8 + 4 * rng.below(2)
            };
            let huge = [u32::MAX, 0x7fff_ffff, 0x1000_0000, 262_145, 0xffff_fff0];
            let small = [0u32, 1, 11, 13, 15];
            let v = if matches!(m, Mutation::HugeLength) {
                huge[rng.below(huge.len())]
            } else {
                small[rng.below(small.len())]
            };
            if field + 4 <= out.len() {
                out[field..field + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// Generous for a debug build on a loaded 2-core machine; a hang is minutes.
const BUDGET: Duration = Duration::from_secs(10);

#[test]
fn mutated_captures_never_panic_or_hang() {
    let started = Instant::now();
    let mut runs = 0;
    for (f, name) in [
        "grpc_compressed.pcap",
        "grpc_ipv6_sll2.pcap",
        "grpc_concurrent.pcapng",
    ]
    .iter()
    .enumerate()
    {
        let bytes = read(name);
        let baseline = analyze(&[&bytes], Config::default());
        assert!(!baseline.exchanges.is_empty(), "{name}");
        for (k, m) in MUTATIONS.iter().enumerate() {
            for seed in 0..6 {
                let mut rng = Rng::new((f * 1000 + k * 100 + seed) as u64);
                let mutated = mutate(&mut rng, &bytes, *m);
                let config = if seed % 3 == 2 {
                    tight()
                } else {
                    Config::default()
                };
                let run = analyze(&[&mutated], config);
                assert!(
                    run.elapsed < BUDGET,
                    "{name} {m:?} seed {seed}: {:?}",
                    run.elapsed
                );
                // Never more exchanges than requests could hold, and any
                // corruption that stopped reading says so.
                assert!(run.exchanges.len() <= 4 * baseline.exchanges.len() + 8);
                runs += 1;
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60), "{runs} runs");
}

/// Small limits, so that hostile input reaches every limit path.
fn tight() -> Config {
    let mut c = Config::default();
    c.flow.max_flows = 2;
    c.flow.reassembly.max_buffered_bytes = 2048;
    c.flow.reassembly.max_segments = 8;
    c.http2.max_buffered_frame = 1024;
    c.grpc.messages.max_message = 2048;
    c.grpc.messages.max_messages = 2;
    c.grpc.max_open_calls = 4;
    c
}

#[test]
fn random_bytes_with_capture_headers_never_panic() {
    let mut rng = Rng::new(7);
    let heads: [&[u8]; 4] = [
        &[
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0,
        ],
        &[
            0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0x14, 1, 0, 0,
        ],
        &[
            0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0x71,
        ],
        &[
            0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0,
        ],
    ];
    for i in 0..200 {
        let mut v = heads[i % heads.len()].to_vec();
        let n = rng.below(4096);
        v.extend((0..n).map(|_| rng.next() as u8));
        let run = analyze(&[&v], Config::default());
        assert!(run.elapsed < BUDGET);
        assert!(run.files[0].is_ok(), "a capture header opens");
    }
}

// ---------------------------------------------------------------------------
// Mutations at the protocol level: the TCP byte streams of real captures,
// with HTTP/2, HPACK, gRPC and protobuf fields overwritten, packetised again.

/// Reassembled bytes of each connection, in the order they were delivered.
#[derive(Default)]
struct Conversations {
    steps: Vec<(u64, Dir, Vec<u8>)>,
}

impl FlowSink for Conversations {
    fn opened(&mut self, _: &ConnInfo) {}
    fn data(&mut self, conn: u64, dir: Dir, d: Delivery<'_>) {
        if let Delivery::Data { bytes, .. } = d {
            self.steps.push((conn, dir, bytes.to_vec()));
        }
    }
    fn closed(&mut self, _: u64) {}
}

fn conversations(bytes: &[u8]) -> Conversations {
    let mut flows = FlowTable::new(vec![8500, 8501], FlowLimits::default());
    let mut c = Conversations::default();
    let mut r = CaptureReader::from_reader("mem".into(), Cursor::new(bytes)).expect("capture");
    r.for_each_packet(1, |p, _| flows.packet(p, &mut c));
    flows.finish(&mut c);
    c
}

/// Writes TCP conversations (with handshakes) between 10.0.0.x clients and
/// 10.0.0.100:8500 as an Ethernet pcap.
fn conversation_pcap(steps: &[(u64, Dir, Vec<u8>)]) -> Vec<u8> {
    let mut seq: std::collections::HashMap<u64, [u32; 2]> = Default::default();
    let mut pkts = Vec::new();
    let mut ts = 1_700_000_000_000_000_000i64;
    let mut push = |data: Vec<u8>| {
        ts += 1_000;
        pkts.push(Owned {
            link: LinkType::ETHERNET,
            ts_ns: ts,
            orig_len: data.len() as u32,
            data,
        });
    };
    let addr = |conn: u64| {
        (
            [10, 0, (conn >> 8) as u8, conn as u8 + 1],
            40_000 + conn as u16,
        )
    };
    let server = ([10, 0, 0, 100], 8500u16);
    for (conn, dir, bytes) in steps {
        let (c_ip, c_port) = addr(*conn);
        let s = seq.entry(*conn).or_insert_with(|| {
            let b = PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4(c_ip, server.0, 64)
                .tcp(c_port, server.1, 1000, 65535)
                .syn();
            let mut p = Vec::new();
            b.write(&mut p, &[]).expect("syn");
            push(p);
            let b = PacketBuilder::ethernet2([2; 6], [1; 6])
                .ipv4(server.0, c_ip, 64)
                .tcp(server.1, c_port, 9000, 65535)
                .syn()
                .ack(1001);
            let mut p = Vec::new();
            b.write(&mut p, &[]).expect("syn-ack");
            push(p);
            [1001, 9001]
        });
        for chunk in bytes.chunks(16_000) {
            let (i, o) = if *dir == Dir::ToServer {
                (0, 1)
            } else {
                (1, 0)
            };
            let b = if *dir == Dir::ToServer {
                PacketBuilder::ethernet2([1; 6], [2; 6])
                    .ipv4(c_ip, server.0, 64)
                    .tcp(c_port, server.1, s[i], 65535)
            } else {
                PacketBuilder::ethernet2([2; 6], [1; 6])
                    .ipv4(server.0, c_ip, 64)
                    .tcp(server.1, c_port, s[i], 65535)
            };
            let mut p = Vec::new();
            b.ack(s[o]).psh().write(&mut p, chunk).expect("segment");
            s[i] = s[i].wrapping_add(chunk.len() as u32);
            push(p);
        }
    }
    write_pcap(&pkts)
}

/// Where the fields of one direction's HTTP/2 stream are: (frame header
/// offset, type, payload length).
fn frames(stream: &[u8]) -> Vec<(usize, u8, usize)> {
    let preface = tfwire::http2::frame::PREFACE;
    let mut at = if stream.starts_with(preface) {
        preface.len()
    } else {
        0
    };
    let mut v = Vec::new();
    while at + 9 <= stream.len() {
        let len = u32::from_be_bytes([0, stream[at], stream[at + 1], stream[at + 2]]) as usize;
        v.push((at, stream[at + 3], len));
        at += 9 + len;
    }
    v
}

#[derive(Debug, Clone, Copy)]
enum Field {
    FrameLength,
    FrameType,
    GrpcLength,
    ProtobufLength,
    HpackSizeUpdate,
    HpackHugeIndex,
    HpackHuffmanGarbage,
    PaddingLength,
}

const FIELDS: [Field; 8] = [
    Field::FrameLength,
    Field::FrameType,
    Field::GrpcLength,
    Field::ProtobufLength,
    Field::HpackSizeUpdate,
    Field::HpackHugeIndex,
    Field::HpackHuffmanGarbage,
    Field::PaddingLength,
];

/// Overwrites one field in the concatenated stream of one direction of one
/// connection. Lengths of the steps are unchanged, so the capture around it
/// stays intact.
fn corrupt(rng: &mut Rng, conv: &mut Conversations, field: Field) -> bool {
    let conns: Vec<u64> = conv.steps.iter().map(|s| s.0).collect();
    let conn = conns[rng.below(conns.len())];
    let dir = if rng.one_in(2) {
        Dir::ToServer
    } else {
        Dir::ToClient
    };
    let idx: Vec<usize> = (0..conv.steps.len())
        .filter(|&i| conv.steps[i].0 == conn && conv.steps[i].1 == dir)
        .collect();
    let mut stream: Vec<u8> = idx
        .iter()
        .flat_map(|&i| conv.steps[i].2.iter().copied())
        .collect();
    let fr = frames(&stream);
    let of_type = |t: u8| -> Vec<(usize, u8, usize)> {
        fr.iter()
            .copied()
            .filter(|f| f.1 == t && f.2 >= 8)
            .collect()
    };
    let mut write = |at: usize, bytes: &[u8]| {
        let end = (at + bytes.len()).min(stream.len());
        stream[at..end].copy_from_slice(&bytes[..end - at]);
    };
    let target = match field {
        Field::FrameLength | Field::FrameType | Field::PaddingLength => {
            fr.get(rng.below(fr.len())).copied()
        }
        Field::GrpcLength | Field::ProtobufLength => {
            let d = of_type(0);
            d.get(rng.below(d.len())).copied()
        }
        _ => {
            let h = of_type(1);
            h.get(rng.below(h.len())).copied()
        }
    };
    let Some((at, _, _)) = target else {
        return false;
    };
    let p = at + 9;
    match field {
        Field::FrameLength => {
            let v = [[0xff, 0xff, 0xff], [0x00, 0x40, 0x00], [0, 0, 0]][rng.below(3)];
            write(at, &v);
        }
        Field::FrameType => write(at + 3, &[[9u8, 1, 5, 0xfa][rng.below(4)]]),
        Field::PaddingLength => {
            write(at + 4, &[0x08 | 0x04]);
            write(p, &[0xff]);
        }
        Field::GrpcLength => write(p + 1, &[0xff, 0xff, 0xff, 0xf0 | rng.below(16) as u8]),
        Field::ProtobufLength => {
            let off = p + 5 + rng.below(6);
            write(off, &[0xff, 0xff, 0xff, 0xff, 0x0f]);
        }
        Field::HpackSizeUpdate => write(p, &[0x3f, 0xe1, 0xff, 0xff, 0x0f]),
        Field::HpackHugeIndex => write(p + rng.below(4), &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        Field::HpackHuffmanGarbage => write(p, &[0x40, 0x85, 0xff, 0xff, 0xff, 0xff, 0xfe]),
    }
    let mut at = 0;
    for &i in &idx {
        let n = conv.steps[i].2.len();
        conv.steps[i].2.copy_from_slice(&stream[at..at + n]);
        at += n;
    }
    true
}

#[test]
fn corrupted_protocol_fields_never_panic_or_hang() {
    let started = Instant::now();
    for name in ["grpc_compressed.pcap", "grpc_concurrent.pcapng"] {
        let original = conversations(&read(name));
        let clean = analyze(&[&conversation_pcap(&original.steps)], Config::default());
        assert!(!clean.exchanges.is_empty(), "{name} re-packetised decodes");
        for (k, field) in FIELDS.iter().enumerate() {
            for seed in 0..5 {
                let mut rng = Rng::new((k * 10 + seed) as u64);
                let mut conv = Conversations {
                    steps: original.steps.clone(),
                };
                let mut changed = false;
                for _ in 0..1 + seed {
                    changed |= corrupt(&mut rng, &mut conv, *field);
                }
                if !changed {
                    continue;
                }
                let config = if seed == 4 {
                    tight()
                } else {
                    Config::default()
                };
                let run = analyze(&[&conversation_pcap(&conv.steps)], config);
                assert!(run.elapsed < BUDGET, "{name} {field:?} {seed}");
                // A corrupted stream may lose exchanges, never invent many.
                assert!(run.exchanges.len() <= 2 * clean.exchanges.len() + 4);
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

// ---------------------------------------------------------------------------
// Decompression bombs inside gRPC messages.

/// HPACK literal header field without indexing, new name (RFC 7541 §6.2.2).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A client that opens `streams` Predict calls, each carrying one gzip
/// message of `body`, and never ends them (the calls stay open until the
/// capture ends, so every decompressed message is held at once).
fn gzip_bomb_capture(streams: u32, body: &[u8]) -> Vec<u8> {
    let mut client = tfwire::http2::frame::PREFACE.to_vec();
    frame(&mut client, 4, 0, 0, &[]);
    for i in 0..streams {
        let id = 1 + 2 * i;
        let mut block = Vec::new();
        literal(&mut block, ":method", "POST");
        literal(&mut block, ":scheme", "http");
        literal(
            &mut block,
            ":path",
            "/tensorflow.serving.PredictionService/Predict",
        );
        literal(&mut block, ":authority", "x");
        literal(&mut block, "content-type", "application/grpc");
        literal(&mut block, "grpc-encoding", "gzip");
        frame(&mut client, 1, 0x4, id, &block);
        let mut msg = vec![1u8];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
        msg.extend_from_slice(body);
        for chunk in msg.chunks(16_384) {
            frame(&mut client, 0, 0, id, chunk);
        }
    }
    let mut server = Vec::new();
    frame(&mut server, 4, 0, 0, &[]);
    conversation_pcap(&[(0, Dir::ToServer, client), (0, Dir::ToClient, server)])
}

fn gzip_of_zeros(n: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; n]).expect("gzip");
    gz.finish().expect("gzip")
}

#[test]
fn gzip_bomb_message_is_capped() {
    let bomb = gzip_of_zeros(4 << 20);
    let mut config = Config::default();
    config.grpc.messages.max_message = 1 << 20;
    let run = analyze(&[&gzip_bomb_capture(1, &bomb)], config);
    assert_eq!(run.exchanges.len(), 1);
    let ex = &run.exchanges[0];
    assert!(!ex.complete);
    assert!(
        ex.notes.iter().any(|n| n.contains("limit")),
        "notes: {:?}",
        ex.notes
    );
}

/// Many open calls, each holding a message that decompressed to the
/// per-message limit: the total held at once is capped (regression: it was
/// `max_message` per open call, gigabytes from a few MiB of capture).
#[test]
fn decompressed_messages_held_at_once_are_capped() {
    const MIB: usize = 1 << 20;
    let mut config = Config::default();
    config.grpc.messages.max_message = MIB;
    config.grpc.messages.max_decompressed_held = 4 * MIB + MIB / 2;
    let run = analyze(&[&gzip_bomb_capture(16, &gzip_of_zeros(MIB))], config);
    assert_eq!(run.exchanges.len(), 16);
    let refused = run
        .exchanges
        .iter()
        .filter(|e| e.notes.iter().any(|n| n.contains("held at once")))
        .count();
    assert!((12..=13).contains(&refused), "{refused} of 16 refused");
}

/// Regression for src/http1: a client that pipelines
/// requests the server never answers makes the decoder keep every one of
/// them, gzip bodies decompressed (64 MiB each by default).
#[test]
fn http1_unanswered_requests_are_bounded() {
    use tfwire::http1::{Connection, Event, Limits};
    let body = gzip_of_zeros(1 << 20);
    let head = format!(
        "POST /v1/models/m:predict HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = Connection::new(Limits {
        max_head: 64 << 10,
        max_body: 1 << 20,
    });
    let mut out = |_: Event| {};
    for i in 0..300 {
        conn.data(Dir::ToServer, head.as_bytes(), i, 0, &mut out);
        conn.data(Dir::ToServer, &body, i, 0, &mut out);
    }
    // 300 MiB of decompressed bodies are held here.
    assert!(
        conn.pending() <= 256,
        "{} unanswered requests held",
        conn.pending()
    );
}

/// Text from the traffic (model and input names from the protobuf, the
/// server's grpc-message) carrying terminal escape sequences must reach a
/// terminal escaped.
#[test]
fn terminal_output_escapes_control_characters() {
    use prost::Message as _;
    use tfwire::tfserving::pb::tensorflow::serving::{ModelSpec, PredictRequest};
    use tfwire::tfserving::pb::tensorflow::{
        tensor_shape_proto::Dim, TensorProto, TensorShapeProto,
    };
    let mut req = PredictRequest {
        model_spec: Some(ModelSpec {
            name: "m\x1b]0;owned\x07".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    req.inputs.insert(
        "x\x1b[2J".into(),
        TensorProto {
            dtype: 1,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: 1,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            float_val: vec![1.0],
            ..Default::default()
        },
    );
    let body = req.encode_to_vec();
    let mut client = tfwire::http2::frame::PREFACE.to_vec();
    frame(&mut client, 4, 0, 0, &[]);
    let mut block = Vec::new();
    literal(&mut block, ":method", "POST");
    literal(
        &mut block,
        ":path",
        "/tensorflow.serving.PredictionService/Predict",
    );
    literal(&mut block, "content-type", "application/grpc");
    frame(&mut client, 1, 0x4, 1, &block);
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
    msg.extend_from_slice(&body);
    frame(&mut client, 0, 0x1, 1, &msg);
    let mut server = Vec::new();
    frame(&mut server, 4, 0, 0, &[]);
    let mut block = Vec::new();
    literal(&mut block, ":status", "200");
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "grpc-status", "3");
    literal(&mut block, "grpc-message", "bad\x1b[31m input\x07\x08\r");
    frame(&mut server, 1, 0x5, 1, &block);
    let pcap = conversation_pcap(&[(0, Dir::ToServer, client), (0, Dir::ToClient, server)]);
    let dir = scratch("escape");
    let path = dir.join("escape.pcap");
    std::fs::write(&path, pcap).expect("write");
    for format in ["table", "jsonl", "summary"] {
        let out = Command::new(tfwire_bin())
            .args(["analyze", "--all", "-f", format])
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{format}: one failed exchange");
        for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !bytes
                    .iter()
                    .any(|&b| b == 0x1b || b == 0x07 || b == 0x08 || b == b'\r'),
                "{format} {what} carries raw control characters:\n{text}"
            );
        }
        if format == "table" {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("owned"), "{text}");
            // One of each: singular nouns.
            assert!(text.contains("1 exchange, 1 failed"), "{text}");
            assert!(text.contains("1 failure, 1 cause:"), "{text}");
            assert!(text.contains("1 TCP connection ("), "{text}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: while looking for frame boundaries (capture started
/// mid-connection, or after a gap), every packet made the search start over
/// from a candidate that waited for more bytes, so junk behind a plausible
/// large frame header cost time quadratic in the 1 MiB search window
/// (seconds per MiB even in release builds).
#[test]
fn http2_resync_over_junk_is_linear() {
    use tfwire::http2::{Connection, Event, Limits};
    let mut c = Connection::new_mid_connection(Limits::default());
    let mut junk = vec![0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1];
    junk.resize(2 << 20, 0);
    let mut real = Vec::new();
    frame(&mut real, 4, 0, 0, &[]);
    frame(&mut real, 6, 0, 0, &[0; 8]);
    frame(&mut real, 8, 0, 0, &[0, 0, 1, 0]);
    let mut block = Vec::new();
    literal(&mut block, "content-type", "application/grpc");
    frame(&mut real, 1, 0x4, 1, &block);
    let started = Instant::now();
    let mut headers = 0;
    for piece in junk.chunks(512).chain(real.chunks(7)) {
        c.data(Dir::ToServer, piece, 1, 0, &mut |ev| {
            if matches!(ev, Event::Headers { .. }) {
                headers += 1;
            }
        });
    }
    assert_eq!(headers, 1, "framing found after the junk");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Regression for src/grpc/mod.rs: one 4 KB dynamic-table
/// entry referenced 64 times per header block turns 73 bytes of capture
/// into 256 KiB of decoded headers, and every open call keeps its header
/// lists (4096 open calls per connection), so a 300 KB capture makes the
/// process hold about 1 GiB.
#[test]
fn hpack_expansion_held_by_open_calls_is_bounded() {
    fn int(out: &mut Vec<u8>, prefix: u8, bits: u32, mut v: usize) {
        let max = (1usize << bits) - 1;
        if v < max {
            out.push(prefix | v as u8);
            return;
        }
        out.push(prefix | max as u8);
        v -= max;
        while v >= 128 {
            out.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        out.push(v as u8);
    }
    let mut client = tfwire::http2::frame::PREFACE.to_vec();
    frame(&mut client, 4, 0, 0, &[]);
    // Literal with incremental indexing, new name: a 4000-byte value.
    let mut block = vec![0x40, 5];
    block.extend_from_slice(b"x-big");
    int(&mut block, 0, 7, 4000);
    block.extend_from_slice(&[b'v'; 4000]);
    frame(&mut client, 1, 0x4, 1, &block);
    for i in 1..4096u32 {
        frame(&mut client, 1, 0x4, 1 + 2 * i, &[0xbe; 64]);
    }
    let dir = scratch("hpack-amp");
    let path = dir.join("amp.pcap");
    std::fs::write(
        &path,
        conversation_pcap(&[(0, Dir::ToServer, client), (0, Dir::ToClient, Vec::new())]),
    )
    .expect("write");
    analyze_bounded(&[path], 768);
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------
// Broken files.

/// A capture cut inside its last record (pcap) or block (pcapng), as a
/// killed tcpdump leaves it: everything before the cut is analysed, and the
/// CLI warns once.
#[test]
fn capture_cut_inside_a_record_is_analysed_with_one_warning() {
    for name in ["grpc_compressed.pcap", "grpc_concurrent.pcapng"] {
        let bytes = read(name);
        let (header, recs) = records(&bytes);
        let last = recs[recs.len() - 1];
        let whole_records = rebuild(&bytes, header, &recs[..recs.len() - 1]);
        let expected = analyze(&[&whole_records], Config::default());
        for cut in [last.start + 7, last.start + 16, last.start + last.len - 1] {
            let run = analyze(&[&bytes[..cut]], Config::default());
            assert_eq!(
                essence(&run.exchanges),
                essence(&expected.exchanges),
                "{name} cut at {cut}"
            );
            assert!(
                matches!(&run.files[0], Ok(Some(_))),
                "{name} cut at {cut}: {:?}",
                run.files[0]
            );
        }
        let dir = scratch("cut");
        let path = dir.join(name);
        std::fs::write(&path, &bytes[..last.start + 20]).expect("write");
        let out = Command::new(tfwire_bin())
            .args(["analyze", "-f", "jsonl"])
            .arg(&path)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{stderr}");
        assert_eq!(
            stderr.matches("warning").count(),
            1,
            "{name} stderr: {stderr}"
        );
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(
            lines,
            expected.exchanges.len() + 1,
            "{name}: exchanges and the summary"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Clock steps backwards (NTP correction, or files merged out of order):
/// the exchanges decode as before and no latency is negative.
#[test]
fn timestamps_jumping_backwards() {
    let bytes = read("grpc_concurrent.pcapng");
    let expected = analyze(&[&bytes], Config::default());
    let mut pkts = packets(&bytes);
    let n = pkts.len();
    for (i, p) in pkts.iter_mut().enumerate() {
        if i >= n / 2 {
            p.ts_ns -= 3_600_000_000_000;
        }
        if i % 7 == 3 {
            p.ts_ns -= 5_000_000;
        }
    }
    let run = analyze(&[&write_pcap(&pkts)], Config::default());
    assert_eq!(essence(&run.exchanges), essence(&expected.exchanges));
    for ex in &run.exchanges {
        if let Some(l) = ex.latency_ms {
            assert!(l.is_finite() && l >= 0.0, "exchange {}: latency {l}", ex.id);
        }
    }
}

fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tfwire-hostile-{}-{what}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A rotated capture: `analyze a.pcap b.pcap` continues the connections of
/// the first file in the second, and finds what the whole file has.
#[test]
fn one_capture_given_as_two_files() {
    let bytes = read("grpc_basic.pcapng");
    let pkts = packets(&bytes);
    let whole = analyze(&[&bytes], Config::default());
    for at in [pkts.len() / 3, pkts.len() / 2 + 1] {
        let (a, b) = pkts.split_at(at);
        let (a, b) = (write_pcap(a), write_pcap(b));
        let split = analyze(&[&a, &b], Config::default());
        assert_eq!(
            essence(&split.exchanges),
            essence(&whole.exchanges),
            "split at packet {at}"
        );
        let frames = |r: &Run| -> Vec<Vec<u64>> {
            let mut v: Vec<_> = r
                .exchanges
                .iter()
                .map(|e| e.request_frames.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            frames(&split),
            frames(&whole),
            "frame numbers continue across files"
        );
    }
    // The same through the CLI.
    let dir = scratch("split");
    let (a, b) = pkts.split_at(pkts.len() / 2);
    let (pa, pb) = (dir.join("a.pcap"), dir.join("b.pcap"));
    std::fs::write(&pa, write_pcap(a)).expect("write");
    std::fs::write(&pb, write_pcap(b)).expect("write");
    let count = |args: &[&Path]| -> usize {
        let out = Command::new(tfwire_bin())
            .args(["analyze", "-f", "jsonl"])
            .args(args)
            .output()
            .expect("run");
        assert!(matches!(out.status.code(), Some(0 | 1)));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"type\":\"exchange\""))
            .count()
    };
    assert_eq!(count(&[&pa, &pb]), whole.exchanges.len());
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------
// The binary under an address-space limit.

/// Runs `tfwire analyze` on each file with its address space limited
/// (`ulimit -v`): an allocation beyond the limit aborts the process, which
/// shows as a signal instead of exit status 0, 1 or 2.
fn analyze_bounded(paths: &[PathBuf], limit_mib: u64) {
    for path in paths {
        let started = Instant::now();
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v {} && exec \"$0\" analyze -f summary \"$1\"",
                limit_mib << 10
            ))
            .arg(tfwire_bin())
            .arg(path)
            .output()
            .expect("run sh");
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "{}: {:?} {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            path.display()
        );
    }
}

#[test]
fn binary_stays_within_an_address_space_limit_on_hostile_files() {
    let dir = scratch("rss");
    let mut paths = Vec::new();
    let mut rng = Rng::new(99);
    for name in ["grpc_compressed.pcap", "grpc_concurrent.pcapng"] {
        let bytes = read(name);
        for m in [Mutation::HugeLength, Mutation::Truncate, Mutation::BitFlips] {
            let p = dir.join(format!("{name}-{m:?}"));
            std::fs::write(&p, mutate(&mut rng, &bytes, m)).expect("write");
            paths.push(p);
        }
    }
    // Headers that announce the largest records and blocks the formats allow.
    let mut pcap = read("grpc_compressed.pcap")[..24].to_vec();
    pcap.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff, 0xff, 0x0f,
    ]);
    pcap.extend_from_slice(&[0; 1000]);
    let p = dir.join("huge-caplen.pcap");
    std::fs::write(&p, pcap).expect("write");
    paths.push(p);
    let bomb = dir.join("gzip-bomb.pcap");
    std::fs::write(&bomb, gzip_bomb_capture(4, &gzip_of_zeros(1 << 20))).expect("write");
    paths.push(bomb);
    analyze_bounded(&paths, 1024);
    let _ = std::fs::remove_dir_all(dir);
}

/// Every packet a reader hands out (frame, time, link type, bytes), the
/// count, and whether it stopped early.
type ReadOut = (Vec<(u64, i64, u32, Vec<u8>)>, u64, bool);

fn packets_of(mut r: CaptureReader<'_>) -> ReadOut {
    let mut v = Vec::new();
    r.for_each_packet(1, |p, _| {
        v.push((p.frame, p.ts_ns, p.link.0, p.data.to_vec()))
    });
    (v, r.stats().packets, r.stats().cut_short.is_some())
}

/// A pipe that hands out a few bytes per read, as a slow writer does.
struct Trickle {
    data: Cursor<Vec<u8>>,
    step: usize,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.step = self.step % 13 + 1;
        let n = buf.len().min(self.step);
        self.data.read(&mut buf[..n])
    }
}

#[test]
fn files_and_trickling_streams_read_mutated_captures_alike() {
    let dir = std::env::temp_dir().join(format!("tfwire-reads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut compared = 0;
    for (f, name) in [
        "grpc_ipv6_sll2.pcap",
        "grpc_basic.pcapng",
        "grpc_midconn_lossy.pcap",
    ]
    .iter()
    .enumerate()
    {
        let bytes = read(name);
        for (k, m) in MUTATIONS.iter().enumerate() {
            for seed in 0..4 {
                let mut rng = Rng::new((f * 1000 + k * 100 + seed + 31) as u64);
                let mutated = mutate(&mut rng, &bytes, *m);
                let path = dir.join(format!("{f}-{k}-{seed}"));
                std::fs::write(&path, &mutated).expect("write");
                let whole = CaptureReader::open(&path).map(packets_of);
                let trickled = CaptureReader::from_reader(
                    "s".into(),
                    Trickle {
                        data: Cursor::new(mutated),
                        step: 0,
                    },
                )
                .map(packets_of);
                match (whole, trickled) {
                    (Ok(a), Ok(b)) => {
                        assert!(
                            a == b,
                            "{name} {m:?} seed {seed}: {} vs {} packets",
                            a.1,
                            b.1
                        )
                    }
                    (Err(a), Err(b)) => assert_eq!(
                        std::mem::discriminant(&a),
                        std::mem::discriminant(&b),
                        "{name} {m:?} seed {seed}"
                    ),
                    (a, b) => panic!("{name} {m:?} seed {seed}: {:?} vs {:?}", a.err(), b.err()),
                }
                compared += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(compared, 3 * MUTATIONS.len() * 4);
}

/// A ring buffer wrapping around (`tcpdump -W`) cuts the file being read:
/// reading ends at the new end, says so, and keeps what came before.
#[test]
fn a_capture_that_shrinks_while_read_ends_cleanly() {
    let path = std::env::temp_dir().join(format!("tfwire-shrinking-{}.pcapng", std::process::id()));
    let bytes = read("grpc_large.pcapng");
    std::fs::write(&path, &bytes).expect("copy");
    let full =
        packets_of(CaptureReader::from_reader("f".into(), Cursor::new(bytes)).expect("open"));
    let mut r = CaptureReader::open(&path).expect("open");
    let mut seen = 0u64;
    r.for_each_packet(1, |p, _| {
        seen += 1;
        if seen == 2 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(600_000))
                .expect("truncate");
        }
        let _ = p;
    });
    let _ = std::fs::remove_file(&path);
    assert!(seen > 2 && seen < full.1, "{seen} of {} packets", full.1);
    let why = r.stats().cut_short.clone().unwrap_or_default();
    assert!(why.starts_with("file ends inside a record ("), "{why}");
}

// ---------------------------------------------------------------------------
// Work that once grew with the product of two attacker-chosen counts. The
// budgets are hang guards only (each took minutes or more in debug builds).

const QUADRATIC_BUDGET: Duration = Duration::from_secs(30);

/// One TCP segment from 10.0.x.y:`c_port` to 10.0.0.100:`s_port` (or back).
fn segment(
    client: u32,
    s_port: u16,
    to_server: bool,
    seq: u32,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let c_ip = [10, 1, (client >> 8) as u8, client as u8];
    let c_port = 1024 + (client >> 16) as u16;
    let server = [10, 0, 0, 100];
    let b = if to_server {
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(c_ip, server, 64)
            .tcp(c_port, s_port, seq, 65535)
    } else {
        PacketBuilder::ethernet2([2; 6], [1; 6])
            .ipv4(server, c_ip, 64)
            .tcp(s_port, c_port, seq, 65535)
    };
    let b = if syn { b.syn() } else { b.ack(1).psh() };
    let mut p = Vec::new();
    b.write(&mut p, payload).expect("segment");
    p
}

fn capture_of(frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let pkts: Vec<Owned> = frames
        .into_iter()
        .enumerate()
        .map(|(i, data)| Owned {
            link: LinkType::ETHERNET,
            ts_ns: 1_700_000_000_000_000_000 + i as i64 * 1_000,
            orig_len: data.len() as u32,
            data,
        })
        .collect();
    write_pcap(&pkts)
}

/// Bare SYNs past --max-flows: each evicts the idlest flow.
#[test]
fn syn_flood_past_max_flows_finishes() {
    let config = Config::default();
    let extra = 40_000;
    let n = config.flow.max_flows as u32 + extra;
    let pcap = capture_of((0..n).map(|i| segment(i, 8500, true, 1000, true, &[])));
    let started = Instant::now();
    let run = analyze(&[&pcap], config);
    assert!(run.exchanges.is_empty());
    assert!(
        started.elapsed() < QUADRATIC_BUDGET,
        "{:?}",
        started.elapsed()
    );
}

/// A server repeating GOAWAY while 4096 calls are open.
#[test]
fn repeated_goaways_over_many_open_calls_finish() {
    let config = Config::default();
    let streams = config.grpc.max_open_calls as u32;
    let mut client = tfwire::http2::frame::PREFACE.to_vec();
    frame(&mut client, 4, 0, 0, &[]);
    let mut block = vec![0x83, 0x86];
    literal(
        &mut block,
        ":path",
        "/tensorflow.serving.PredictionService/Predict",
    );
    literal(&mut block, "content-type", "application/grpc");
    for i in 0..streams {
        frame(&mut client, 1, 0x4, 2 * i + 1, &block);
    }
    let mut server = Vec::new();
    frame(&mut server, 4, 0, 0, &[]);
    // The first refuses the upper half of the calls; the rest repeat it.
    for _ in 0..600_000 {
        frame(&mut server, 7, 0, 0, &[0, 0, 0x10, 0, 0, 0, 0, 0]);
    }
    let pcap = conversation_pcap(&[(0, Dir::ToServer, client), (0, Dir::ToClient, server)]);
    let started = Instant::now();
    let run = analyze(&[&pcap], config);
    let elapsed = started.elapsed();
    assert_eq!(run.exchanges.len(), streams as usize);
    let refused = run
        .exchanges
        .iter()
        .filter(|e| e.notes.iter().any(|n| n.contains("GOAWAY")))
        .count();
    // Streams 1..=8191 (odd): those above 4096 were never processed.
    assert_eq!(refused, streams as usize / 2);
    assert!(elapsed < QUADRATIC_BUDGET, "{elapsed:?}");
}

/// A connection whose protocol stays undecided, fed one byte per segment
/// up to the 64 KiB it examines, on the gRPC and the REST port.
#[test]
fn undecided_connection_fed_byte_by_byte_finishes() {
    for port in [8500, 8501] {
        let mut frames = vec![segment(7, port, true, 999, true, &[])];
        frames.extend((0..65_600u32).map(|i| segment(7, port, true, 1000 + i, false, &[0xff])));
        let pcap = capture_of(frames);
        let started = Instant::now();
        analyze(&[&pcap], Config::default());
        assert!(
            started.elapsed() < QUADRATIC_BUDGET,
            "port {port}: {:?}",
            started.elapsed()
        );
    }
}
