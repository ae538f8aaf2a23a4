//! Benchmark capture generator (issue 7): big captures built from the real
//! traffic in `fixtures/`.
//!
//! Every TCP connection of a fixture is decoded back to its two byte streams
//! (the real HTTP/2 frames with their real HPACK blocks and gRPC messages, or
//! the real HTTP/1.1 REST requests) with `tfwire::net::FlowTable`. A generated
//! connection replays one source connection's streams in their original order
//! under a fresh 4-tuple and fresh initial sequence numbers: 3-way handshake,
//! data cut at the MSS, ACKs, FIN. Many connections are open at once and their
//! packets are interleaved. Output is Ethernet + IPv4 in pcap (µs) or pcapng
//! (ns), with correct IP and TCP checksums and increasing timestamps.
//!
//! Profile `large`: whole replays of `grpc_large` (one 3 MB resnet Predict),
//! `grpc_basic` (one 602 KB resnet Predict and 36 small calls) and
//! `rest_basic`, until the file reaches `--size-mb`.
//!
//! Profile `small`: each connection replays `grpc_concurrent` (80 small
//! Predicts, up to 79 in flight) and then carries hundreds more calls cloned
//! from its own streams. A stream is cloned (with a new stream id) only if its
//! header blocks neither add to nor resize the HPACK dynamic tables and come
//! after the last block that did, in both directions, so every clone decodes
//! against exactly the table state its bytes were encoded for. Clones are
//! chosen so that about 5% of all calls end in INVALID_ARGUMENT; the rest are
//! successful Predicts. Generation stops at `--packets`.
//!
//! Everything is deterministic for a given seed. The caller gets the counts
//! the capture must analyse to ([`Summary`]).
//!
//! This file is used by `benches/tools` (binary `gen_captures`) and, through
//! `#[path]`, by `tests/bench_gen.rs`; it needs only `std` and `tfwire`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tfwire::capture::CaptureReader;
use tfwire::net::{ConnInfo, Delivery, Dir, FlowLimits, FlowSink, FlowTable};
use tfwire::pipeline::{Analyzer, Config};
use tfwire::tfserving::Exchange;

/// Which workload to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Big tensors: 602 KB and 3 MB Predict requests (plus REST), about `size_mb` MiB.
    Large,
    /// Small Predicts, about 5% INVALID_ARGUMENT, about `packets` packets.
    Small,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Large => "large",
            Profile::Small => "small",
        }
    }
}

/// File format of the generated capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap, microsecond timestamps (what `tcpdump -w` writes).
    Pcap,
    /// pcapng, one interface, nanosecond timestamps (what dumpcap writes).
    Pcapng,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub profile: Profile,
    pub fixtures: PathBuf,
    pub out: PathBuf,
    pub format: Format,
    /// Stop opening connections once the file holds this many bytes (large).
    pub size_bytes: u64,
    /// Stop opening connections once this many packets are planned (small).
    pub packets: u64,
    /// TCP payload bytes per segment.
    pub mss: usize,
    /// Connections open at once.
    pub concurrency: usize,
    pub seed: u64,
    /// Small profile: the share of calls, in percent, answered
    /// INVALID_ARGUMENT (an incident capture has far more than the usual 5).
    pub fail_percent: u64,
}

impl Options {
    /// The defaults of a profile: about 1 GiB, or 5 million packets.
    pub fn new(profile: Profile, fixtures: PathBuf, out: PathBuf) -> Options {
        Options {
            profile,
            fixtures,
            out,
            format: Format::Pcap,
            size_bytes: 1 << 30,
            packets: 5_000_000,
            mss: 1448,
            concurrency: match profile {
                Profile::Large => 8,
                Profile::Small => 32,
            },
            seed: 7,
            fail_percent: 5,
        }
    }
}

/// What was written, and what an analysis of it must find.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub packets: u64,
    pub file_bytes: u64,
    /// TCP payload bytes (both directions).
    pub payload_bytes: u64,
    pub connections: u64,
    /// Exchanges (gRPC calls and REST requests) the capture holds.
    pub exchanges: u64,
    pub grpc_exchanges: u64,
    pub rest_exchanges: u64,
    /// Exchanges that failed (gRPC status ≠ 0 or HTTP status ≥ 400).
    pub failed: u64,
    /// gRPC calls answered INVALID_ARGUMENT.
    pub invalid_argument: u64,
    /// Calls cloned from template streams (small profile).
    pub cloned_calls: u64,
    /// Largest single request body (gRPC request DATA or REST request), bytes.
    pub largest_request: u64,
}

impl Summary {
    /// One JSON object (no serde needed).
    pub fn to_json(&self, profile: Profile, path: &Path, seconds: f64) -> String {
        format!(
            concat!(
                "{{\"profile\":\"{}\",\"path\":\"{}\",\"packets\":{},\"file_bytes\":{},",
                "\"payload_bytes\":{},\"connections\":{},\"exchanges\":{},\"grpc_exchanges\":{},",
                "\"rest_exchanges\":{},\"failed\":{},\"invalid_argument\":{},\"cloned_calls\":{},",
                "\"largest_request\":{},\"seconds\":{:.3}}}"
            ),
            profile.name(),
            path.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\""),
            self.packets,
            self.file_bytes,
            self.payload_bytes,
            self.connections,
            self.exchanges,
            self.grpc_exchanges,
            self.rest_exchanges,
            self.failed,
            self.invalid_argument,
            self.cloned_calls,
            self.largest_request,
            seconds
        )
    }
}

// ---------------------------------------------------------------------------
// Sources: the fixtures' connections as byte streams.

const TO_SERVER: usize = 0;
const TO_CLIENT: usize = 1;

/// A run of bytes one side sent, as the capture delivered it (one TCP segment
/// or a few coalesced ones), in stream coordinates.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    dir: usize,
    start: usize,
    end: usize,
}

/// How a fixture's exchange ended.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    grpc: bool,
    failed: bool,
    invalid_argument: bool,
    request_bytes: u64,
}

impl Outcome {
    fn of(ex: &Exchange) -> Outcome {
        Outcome {
            grpc: ex.stream.is_some(),
            failed: !ex.status.ok,
            invalid_argument: ex.status.grpc_code == Some(3),
            request_bytes: ex.request_bytes,
        }
    }
}

/// A call that may be repeated on its connection with a new stream id.
#[derive(Debug, Clone)]
struct Template {
    stream: u32,
    /// Its client frames (HEADERS, CONTINUATION, DATA) and server frames, verbatim.
    request: Vec<u8>,
    response: Vec<u8>,
    /// Offsets of the frame headers inside `request` / `response`.
    request_frames: Vec<usize>,
    response_frames: Vec<usize>,
    outcome: Outcome,
}

/// One TCP connection of a fixture.
#[derive(Debug, Clone)]
pub struct SourceConn {
    pub name: String,
    pub server_port: u16,
    /// [to server, to client]
    streams: [Vec<u8>; 2],
    chunks: Vec<Chunk>,
    outcomes: Vec<Outcome>,
    /// HTTP/2 only: where clones go in each direction (after the last stream
    /// frame), the highest client stream id, and the clonable calls.
    cut: [usize; 2],
    max_stream: u32,
    templates: Vec<Template>,
}

impl SourceConn {
    pub fn exchanges(&self) -> usize {
        self.outcomes.len()
    }

    pub fn payload_bytes(&self) -> usize {
        self.streams[0].len() + self.streams[1].len()
    }

    /// (successful, INVALID_ARGUMENT) templates.
    pub fn template_counts(&self) -> (usize, usize) {
        let ok = self.templates.iter().filter(|t| !t.outcome.failed).count();
        let ia = self
            .templates
            .iter()
            .filter(|t| t.outcome.invalid_argument)
            .count();
        (ok, ia)
    }
}

#[derive(Default)]
struct RawConn {
    server_port: u16,
    streams: [Vec<u8>; 2],
    chunks: Vec<Chunk>,
    gaps: u64,
}

#[derive(Default)]
struct Collect {
    conns: Vec<RawConn>,
}

impl FlowSink for Collect {
    fn opened(&mut self, info: &ConnInfo) {
        let id = usize::try_from(info.id).unwrap_or(usize::MAX);
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, RawConn::default);
        }
        self.conns[id].server_port = info.server.port();
    }

    fn data(&mut self, conn: u64, dir: Dir, delivery: Delivery<'_>) {
        let Some(c) = usize::try_from(conn)
            .ok()
            .and_then(|i| self.conns.get_mut(i))
        else {
            return;
        };
        let d = dir.index();
        match delivery {
            Delivery::Data { bytes, .. } if !bytes.is_empty() => {
                let start = c.streams[d].len();
                c.streams[d].extend_from_slice(bytes);
                c.chunks.push(Chunk {
                    dir: d,
                    start,
                    end: c.streams[d].len(),
                });
            }
            Delivery::Gap { .. } => c.gaps += 1,
            _ => {}
        }
    }

    fn closed(&mut self, _conn: u64) {}
}

/// Reads one fixture into its connections (with the exchanges tfwire finds
/// in each, and the clonable HTTP/2 calls).
pub fn load_source(path: &Path) -> Result<Vec<SourceConn>, String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config = Config::default();
    let mut ports = config.grpc_ports.clone();
    ports.extend(&config.rest_ports);

    let mut collect = Collect::default();
    let mut flows = FlowTable::new(ports, FlowLimits::default());
    let mut reader = CaptureReader::open(path).map_err(|e| e.to_string())?;
    reader.for_each_packet(1, |p, _| flows.packet(p, &mut collect));
    flows.finish(&mut collect);

    // What tfwire itself makes of each connection: the exchange counts the
    // generated capture must reproduce.
    let mut per_conn: BTreeMap<u64, Vec<(Option<u32>, Outcome)>> = BTreeMap::new();
    {
        let mut analyzer = Analyzer::new(config, |ex: Exchange| {
            per_conn
                .entry(ex.connection)
                .or_default()
                .push((ex.stream, Outcome::of(&ex)));
            true
        });
        let mut reader = CaptureReader::open(path).map_err(|e| e.to_string())?;
        reader.for_each_packet(1, |p, _| analyzer.packet(p));
        analyzer.finish();
    }

    let mut out = Vec::new();
    for (id, raw) in collect.conns.into_iter().enumerate() {
        if raw.gaps > 0 {
            return Err(format!(
                "{name}: connection {id} has gaps; not a usable source"
            ));
        }
        if raw.chunks.is_empty() {
            continue;
        }
        let exchanges = per_conn.remove(&(id as u64)).unwrap_or_default();
        let outcomes: Vec<Outcome> = exchanges.iter().map(|(_, o)| *o).collect();
        let mut conn = SourceConn {
            name: format!("{name}#{id}"),
            server_port: raw.server_port,
            cut: [raw.streams[0].len(), raw.streams[1].len()],
            streams: raw.streams,
            chunks: raw.chunks,
            outcomes,
            max_stream: 0,
            templates: Vec::new(),
        };
        if conn.streams[TO_SERVER].starts_with(PREFACE) {
            analyse_h2(&mut conn, &exchanges)?;
        }
        out.push(conn);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// HTTP/2: frames, HPACK neutrality, templates.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

#[derive(Debug, Clone, Copy)]
struct Frame {
    off: usize,
    len: usize,
    ty: u8,
    flags: u8,
    stream: u32,
}

fn frames(bytes: &[u8], mut pos: usize) -> Result<Vec<Frame>, String> {
    let mut out = Vec::new();
    while pos < bytes.len() {
        let h = bytes
            .get(pos..pos + 9)
            .ok_or_else(|| format!("HTTP/2 frame header cut at {pos}"))?;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if pos + 9 + len > bytes.len() {
            return Err(format!("HTTP/2 frame at {pos} runs past the stream"));
        }
        out.push(Frame {
            off: pos,
            len: 9 + len,
            ty: h[3],
            flags: h[4],
            stream,
        });
        pos += 9 + len;
    }
    Ok(out)
}

/// The header block fragment a HEADERS or CONTINUATION frame carries.
fn fragment<'a>(bytes: &'a [u8], f: &Frame) -> Option<&'a [u8]> {
    let mut p = bytes.get(f.off + 9..f.off + f.len)?;
    if f.ty == HEADERS {
        let mut pad = 0;
        if f.flags & PADDED != 0 {
            pad = usize::from(*p.first()?);
            p = p.get(1..)?;
        }
        if f.flags & PRIORITY != 0 {
            p = p.get(5..)?;
        }
        p = p.get(..p.len().checked_sub(pad)?)?;
    }
    Some(p)
}

fn hpack_int(b: &[u8], i: usize, prefix: u32) -> Option<(u64, usize)> {
    let mask = ((1u32 << prefix) - 1) as u8;
    let mut v = u64::from(*b.get(i)? & mask);
    let mut i = i + 1;
    if v < u64::from(mask) {
        return Some((v, i));
    }
    let mut shift = 0;
    loop {
        let c = *b.get(i)?;
        i += 1;
        v = v.checked_add(u64::from(c & 0x7f) << shift)?;
        shift += 7;
        if c & 0x80 == 0 {
            return Some((v, i));
        }
        if shift > 56 {
            return None;
        }
    }
}

fn hpack_skip_string(b: &[u8], i: usize) -> Option<usize> {
    let (len, i) = hpack_int(b, i, 7)?;
    let end = i.checked_add(usize::try_from(len).ok()?)?;
    (end <= b.len()).then_some(end)
}

/// Whether decoding `block` leaves the HPACK dynamic table as it was: no
/// literal with incremental indexing, no table size update. `None` if malformed.
fn hpack_neutral(block: &[u8]) -> Option<bool> {
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        if b & 0x80 != 0 {
            i = hpack_int(block, i, 7)?.1;
        } else if b & 0xc0 == 0x40 || b & 0xe0 == 0x20 {
            return Some(false);
        } else {
            let (index, j) = hpack_int(block, i, 4)?;
            i = j;
            if index == 0 {
                i = hpack_skip_string(block, i)?;
            }
            i = hpack_skip_string(block, i)?;
        }
    }
    Some(true)
}

#[derive(Default)]
struct StreamRec {
    /// Frame indices per direction (DATA, HEADERS, CONTINUATION only).
    frames: [Vec<usize>; 2],
    /// Frame index of the first frame of each header block, per direction.
    blocks: [Vec<usize>; 2],
    neutral: bool,
    ended: [bool; 2],
    reset: bool,
}

fn analyse_h2(conn: &mut SourceConn, exchanges: &[(Option<u32>, Outcome)]) -> Result<(), String> {
    let all = [
        frames(&conn.streams[TO_SERVER], PREFACE.len())
            .map_err(|e| format!("{}: client: {e}", conn.name))?,
        frames(&conn.streams[TO_CLIENT], 0).map_err(|e| format!("{}: server: {e}", conn.name))?,
    ];
    let mut streams: BTreeMap<u32, StreamRec> = BTreeMap::new();
    // Per direction: index of the last frame whose header block changed the table.
    let mut last_change: [Option<usize>; 2] = [None, None];
    let mut block = Vec::new();
    for (d, list) in all.iter().enumerate() {
        let bytes = &conn.streams[d];
        let mut open: Option<(u32, usize)> = None;
        for (i, f) in list.iter().enumerate() {
            if f.stream != 0 && matches!(f.ty, DATA | HEADERS | CONTINUATION) {
                conn.cut[d] = f.off + f.len;
            }
            if f.stream == 0 {
                continue;
            }
            let rec = streams.entry(f.stream).or_insert_with(|| StreamRec {
                neutral: true,
                ..StreamRec::default()
            });
            match f.ty {
                DATA | HEADERS | CONTINUATION => rec.frames[d].push(i),
                RST_STREAM => rec.reset = true,
                _ => {}
            }
            if f.ty == HEADERS {
                rec.blocks[d].push(i);
                block.clear();
                open = Some((f.stream, i));
            }
            if matches!(f.ty, HEADERS | CONTINUATION) {
                let Some((s, first)) = open else {
                    return Err(format!("{}: CONTINUATION without HEADERS", conn.name));
                };
                block.extend_from_slice(fragment(bytes, f).ok_or("bad header frame")?);
                if f.flags & END_HEADERS != 0 {
                    let neutral = hpack_neutral(&block)
                        .ok_or_else(|| format!("{}: malformed HPACK block", conn.name))?;
                    if !neutral {
                        last_change[d] = Some(first);
                        if let Some(r) = streams.get_mut(&s) {
                            r.neutral = false;
                        }
                    }
                    open = None;
                }
            }
            if matches!(f.ty, DATA | HEADERS) && f.flags & END_STREAM != 0 {
                if let Some(r) = streams.get_mut(&f.stream) {
                    r.ended[d] = true;
                }
            }
        }
    }
    conn.max_stream = streams
        .keys()
        .copied()
        .filter(|s| s % 2 == 1)
        .max()
        .unwrap_or(0);

    let by_stream: BTreeMap<u32, Outcome> = exchanges
        .iter()
        .filter_map(|(s, o)| s.map(|s| (s, *o)))
        .collect();
    for (&id, rec) in &streams {
        let after = |d: usize| {
            rec.blocks[d]
                .iter()
                .all(|&i| last_change[d].is_none_or(|c| i > c))
        };
        let clonable = id % 2 == 1
            && rec.neutral
            && !rec.reset
            && rec.ended == [true, true]
            && !rec.blocks[0].is_empty()
            && !rec.blocks[1].is_empty()
            && rec.frames[0].first() == rec.blocks[0].first()
            && after(TO_SERVER)
            && after(TO_CLIENT);
        let Some(outcome) = by_stream.get(&id) else {
            continue;
        };
        if !clonable {
            continue;
        }
        let copy = |d: usize| {
            let mut bytes = Vec::new();
            let mut heads = Vec::new();
            for &i in &rec.frames[d] {
                let f = all[d][i];
                heads.push(bytes.len());
                bytes.extend_from_slice(&conn.streams[d][f.off..f.off + f.len]);
            }
            (bytes, heads)
        };
        let (request, request_frames) = copy(TO_SERVER);
        let (response, response_frames) = copy(TO_CLIENT);
        conn.templates.push(Template {
            stream: id,
            request,
            response,
            request_frames,
            response_frames,
            outcome: *outcome,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Generation.

/// A small deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Msg {
    dir: usize,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Syn,
    SynAck,
    HandshakeAck,
    Data,
    Fin,
    FinAck,
    LastAck,
    Done,
}

/// One generated connection being written.
struct Active {
    buf: Vec<u8>,
    msgs: Vec<Msg>,
    /// [client, server] address and port.
    ip: [[u8; 4]; 2],
    port: [u16; 2],
    /// Next sequence number each side sends ([to server, to client]).
    seq: [u32; 2],
    ip_id: [u16; 2],
    phase: Phase,
    msg: usize,
    pos: usize,
    /// Full segments a side received since it last acknowledged.
    unacked: [u32; 2],
    /// A side owes a pure ACK.
    ack_due: Option<usize>,
    /// Packets and file bytes still to come (estimates, for the budgets).
    remaining: u64,
    remaining_bytes: u64,
}

impl Active {
    fn ack_of(&self, dir: usize) -> u32 {
        self.seq[1 - dir]
    }
}

/// Everything one generated connection carries, for the summary.
#[derive(Default)]
struct Planned {
    exchanges: u64,
    grpc: u64,
    rest: u64,
    failed: u64,
    invalid_argument: u64,
    cloned: u64,
    largest_request: u64,
}

/// Fills `buf`/`msgs` with the byte runs of a replay of `src` plus `clones`
/// cloned calls (of which `fails` answered INVALID_ARGUMENT).
fn plan_connection(
    src: &SourceConn,
    clones: u64,
    fails: u64,
    rng: &mut Rng,
    buf: &mut Vec<u8>,
    msgs: &mut Vec<Msg>,
) -> Planned {
    buf.clear();
    msgs.clear();
    let mut planned = Planned::default();
    for o in &src.outcomes {
        planned.exchanges += 1;
        if o.grpc {
            planned.grpc += 1;
        } else {
            planned.rest += 1;
        }
        planned.failed += u64::from(o.failed);
        planned.invalid_argument += u64::from(o.invalid_argument);
        planned.largest_request = planned.largest_request.max(o.request_bytes);
    }
    let push = |buf: &mut Vec<u8>, msgs: &mut Vec<Msg>, dir: usize, bytes: &[u8]| {
        if bytes.is_empty() {
            return;
        }
        let start = buf.len();
        buf.extend_from_slice(bytes);
        msgs.push(Msg {
            dir,
            start,
            end: buf.len(),
        });
    };
    // The source connection up to the last stream frame in each direction.
    for c in &src.chunks {
        let end = c.end.min(src.cut[c.dir]);
        if c.start < end {
            push(buf, msgs, c.dir, &src.streams[c.dir][c.start..end]);
        }
    }
    // Cloned calls, in flights of 1–4 concurrent calls.
    let ok: Vec<&Template> = src.templates.iter().filter(|t| !t.outcome.failed).collect();
    let bad: Vec<&Template> = src
        .templates
        .iter()
        .filter(|t| t.outcome.invalid_argument)
        .collect();
    let mut stream = src.max_stream;
    let mut done = 0u64;
    let mut flight: Vec<(u32, &Template)> = Vec::with_capacity(4);
    while done < clones && !ok.is_empty() {
        flight.clear();
        let n = (1 + rng.below(4)).min(clones - done);
        for _ in 0..n {
            // Failures spread evenly over the clones.
            let fail = (done + 1) * fails / clones > done * fails / clones && !bad.is_empty();
            let t = if fail {
                bad[rng.below(bad.len() as u64) as usize]
            } else {
                ok[rng.below(ok.len() as u64) as usize]
            };
            stream += 2;
            flight.push((stream, t));
            done += 1;
            planned.exchanges += 1;
            planned.grpc += 1;
            planned.cloned += 1;
            planned.failed += u64::from(t.outcome.failed);
            planned.invalid_argument += u64::from(t.outcome.invalid_argument);
            planned.largest_request = planned.largest_request.max(t.outcome.request_bytes);
        }
        for &(id, t) in &flight {
            push_frames(buf, msgs, TO_SERVER, &t.request, &t.request_frames, id);
        }
        // Responses in any order.
        for i in (1..flight.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            flight.swap(i, j);
        }
        for &(id, t) in &flight {
            push_frames(buf, msgs, TO_CLIENT, &t.response, &t.response_frames, id);
        }
    }
    // The rest of the source connection (connection-level frames after the cut).
    for d in [TO_SERVER, TO_CLIENT] {
        let s = &src.streams[d];
        if src.cut[d] < s.len() {
            push(buf, msgs, d, &s[src.cut[d]..]);
        }
    }
    planned
}

fn push_frames(
    buf: &mut Vec<u8>,
    msgs: &mut Vec<Msg>,
    dir: usize,
    bytes: &[u8],
    heads: &[usize],
    stream: u32,
) {
    let start = buf.len();
    buf.extend_from_slice(bytes);
    for &h in heads {
        buf[start + h + 5..start + h + 9].copy_from_slice(&stream.to_be_bytes());
    }
    msgs.push(Msg {
        dir,
        start,
        end: buf.len(),
    });
}

/// Packets a planned connection takes: handshake, segments, ACKs, FIN
/// (the same decisions as [`step`]).
fn count_packets(msgs: &[Msg], mss: usize) -> u64 {
    let mut n = 6;
    let mut unacked = [0u32; 2];
    for (i, m) in msgs.iter().enumerate() {
        let segs = (m.end - m.start).div_ceil(mss);
        let peer = 1 - m.dir;
        for s in 0..segs {
            n += 1;
            unacked[m.dir] = 0;
            unacked[peer] += 1;
            let due = if s + 1 == segs {
                msgs.get(i + 1).is_none_or(|next| next.dir != peer)
            } else {
                unacked[peer] >= 2
            };
            if due {
                n += 1;
                unacked[peer] = 0;
            }
        }
    }
    n
}

/// Writes the capture described by `opts`.
pub fn generate(opts: &Options) -> Result<Summary, String> {
    if opts.mss == 0 || opts.mss > 65_483 {
        return Err("--mss must be between 1 and 65483".into());
    }
    let load = |name: &str| load_source(&opts.fixtures.join(name));
    // Weighted choice of source connections for new generated connections.
    let mut sources: Vec<(SourceConn, u64)> = Vec::new();
    match opts.profile {
        Profile::Large => {
            // Connections: 60% grpc_large (3 MB request), 30% grpc_basic
            // (602 KB request and 36 small calls), 10% one of rest_basic's.
            let rest = load("rest_basic.pcapng")?;
            let r = (rest.len() as u64).max(1);
            for c in load("grpc_large.pcapng")? {
                sources.push((c, 6 * r));
            }
            for c in load("grpc_basic.pcapng")? {
                sources.push((c, 3 * r));
            }
            for c in rest {
                sources.push((c, 1));
            }
        }
        Profile::Small => {
            let mut base = load("grpc_concurrent.pcapng")?;
            base.retain(|c| {
                let (ok, ia) = c.template_counts();
                ok > 0 && ia > 0
            });
            if base.is_empty() {
                base = load("grpc_basic.pcapng")?;
                base.retain(|c| {
                    let (ok, ia) = c.template_counts();
                    ok > 0 && ia > 0
                });
            }
            if base.is_empty() {
                return Err(
                    "no fixture connection has clonable OK and INVALID_ARGUMENT calls".into(),
                );
            }
            for c in base {
                sources.push((c, 1));
            }
        }
    }
    let total_weight: u64 = sources.iter().map(|(_, w)| *w).sum();
    if sources.is_empty() || total_weight == 0 {
        return Err("no source connections".into());
    }

    if let Some(dir) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = opts.out.with_extension("partial");
    let file = File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut w = Writer::new(
        BufWriter::with_capacity(1 << 20, file),
        opts.format,
        opts.mss,
    )
    .map_err(|e| format!("{}: {e}", tmp.display()))?;

    let mut rng = Rng::new(opts.seed);
    let mut summary = Summary::default();
    let mut active: Vec<Active> = Vec::with_capacity(opts.concurrency);
    let mut pool: Vec<(Vec<u8>, Vec<Msg>)> = Vec::new();
    let mut next_conn = 0u64;
    // 2026-11-27T16:00:00Z.
    let mut ts_ns: i64 = 1_795_795_200_000_000_000;
    let mut exhausted = false;

    loop {
        // Open connections until `concurrency` are open or the budget is spent.
        while !exhausted && active.len() < opts.concurrency.max(1) {
            let spent = match opts.profile {
                Profile::Large => {
                    let outstanding: u64 = active.iter().map(|a| a.remaining_bytes).sum();
                    w.bytes + outstanding >= opts.size_bytes
                }
                Profile::Small => {
                    let outstanding: u64 = active.iter().map(|a| a.remaining).sum();
                    summary.packets + outstanding >= opts.packets
                }
            };
            if spent {
                exhausted = true;
                break;
            }
            let mut pick = rng.below(total_weight);
            let mut src = &sources[0].0;
            for (c, weight) in &sources {
                if pick < *weight {
                    src = c;
                    break;
                }
                pick -= weight;
            }
            let (mut buf, mut msgs) = pool.pop().unwrap_or_default();
            let (clones, fails) = match opts.profile {
                Profile::Large => (0, 0),
                Profile::Small => {
                    let clones = 500 + rng.below(1001);
                    // About `fail_percent` INVALID_ARGUMENT over the whole connection.
                    let total = src.exchanges() as u64 + clones;
                    let base_ia = src.outcomes.iter().filter(|o| o.invalid_argument).count();
                    let fails = total * opts.fail_percent.min(100) / 100;
                    (clones, fails.saturating_sub(base_ia as u64))
                }
            };
            let p = plan_connection(src, clones, fails, &mut rng, &mut buf, &mut msgs);
            summary.connections += 1;
            summary.exchanges += p.exchanges;
            summary.grpc_exchanges += p.grpc;
            summary.rest_exchanges += p.rest;
            summary.failed += p.failed;
            summary.invalid_argument += p.invalid_argument;
            summary.cloned_calls += p.cloned;
            summary.largest_request = summary.largest_request.max(p.largest_request);
            let remaining = count_packets(&msgs, opts.mss);
            let remaining_bytes = buf.len() as u64 + remaining * 82;
            let i = next_conn;
            next_conn += 1;
            // Sequence numbers: random, one connection in eight close to the
            // 2^32 wrap so that it wraps mid-stream.
            let mut isn = || {
                if rng.below(8) == 0 {
                    u32::MAX - rng.below(1 << 20) as u32
                } else {
                    rng.next() as u32
                }
            };
            let seq = [isn(), isn()];
            active.push(Active {
                buf,
                msgs,
                ip: [
                    [10, 1 + ((i >> 16) % 200) as u8, (i >> 8) as u8, i as u8],
                    [10, 0, 0, 9],
                ],
                port: [
                    32768 + (i.wrapping_mul(7919) % 28000) as u16,
                    src.server_port,
                ],
                seq,
                ip_id: [rng.next() as u16, rng.next() as u16],
                phase: Phase::Syn,
                msg: 0,
                pos: 0,
                unacked: [0, 0],
                ack_due: None,
                remaining,
                remaining_bytes,
            });
        }
        if active.is_empty() {
            break;
        }
        let k = rng.below(active.len() as u64) as usize;
        ts_ns += 1_000 + rng.below(2_000) as i64;
        let sent = step(&mut active[k], &mut w, ts_ns, opts.mss)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        summary.packets += 1;
        summary.payload_bytes += sent as u64;
        let a = &mut active[k];
        a.remaining_bytes = a.remaining_bytes.saturating_sub(sent as u64 + 82);
        // Larger segments take longer on the wire (about 10 Gbit/s).
        ts_ns += sent as i64;
        if active[k].phase == Phase::Done {
            let a = active.swap_remove(k);
            pool.push((a.buf, a.msgs));
        }
    }
    summary.file_bytes = w.bytes;
    w.finish().map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    Ok(summary)
}

const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Writes the connection's next packet; returns its payload length.
fn step<W: Write>(a: &mut Active, w: &mut Writer<W>, ts_ns: i64, mss: usize) -> io::Result<usize> {
    a.remaining = a.remaining.saturating_sub(1);
    match a.phase {
        Phase::Syn => {
            w.packet(a, TO_SERVER, SYN, None, &[], ts_ns)?;
            a.seq[TO_SERVER] = a.seq[TO_SERVER].wrapping_add(1);
            a.phase = Phase::SynAck;
        }
        Phase::SynAck => {
            let ack = a.ack_of(TO_CLIENT);
            w.packet(a, TO_CLIENT, SYN | ACK, Some(ack), &[], ts_ns)?;
            a.seq[TO_CLIENT] = a.seq[TO_CLIENT].wrapping_add(1);
            a.phase = Phase::HandshakeAck;
        }
        Phase::HandshakeAck => {
            let ack = a.ack_of(TO_SERVER);
            w.packet(a, TO_SERVER, ACK, Some(ack), &[], ts_ns)?;
            a.phase = Phase::Data;
        }
        Phase::Data => {
            if let Some(d) = a.ack_due.take() {
                let ack = a.ack_of(d);
                w.packet(a, d, ACK, Some(ack), &[], ts_ns)?;
                a.unacked[d] = 0;
                return Ok(0);
            }
            let Some(&m) = a.msgs.get(a.msg) else {
                a.phase = Phase::Fin;
                return step(a, w, ts_ns, mss);
            };
            let start = m.start + a.pos;
            let end = (start + mss).min(m.end);
            let last = end == m.end;
            let flags = if last { ACK | PSH } else { ACK };
            let ack = a.ack_of(m.dir);
            // Split borrow: the payload lives in `a.buf`.
            let buf = std::mem::take(&mut a.buf);
            let r = w.packet(a, m.dir, flags, Some(ack), &buf[start..end], ts_ns);
            a.buf = buf;
            r?;
            let n = end - start;
            a.seq[m.dir] = a.seq[m.dir].wrapping_add(n as u32);
            // Data carries an ACK of everything the other side sent.
            a.unacked[m.dir] = 0;
            let peer = 1 - m.dir;
            a.unacked[peer] += 1;
            if last {
                a.msg += 1;
                a.pos = 0;
                // The receiver acknowledges unless it answers next.
                let answers = a.msgs.get(a.msg).is_some_and(|n| n.dir == peer);
                if !answers {
                    a.ack_due = Some(peer);
                }
            } else {
                a.pos += n;
                // Delayed ACK: every second full segment.
                if a.unacked[peer] >= 2 {
                    a.ack_due = Some(peer);
                }
            }
            return Ok(n);
        }
        Phase::Fin => {
            let ack = a.ack_of(TO_SERVER);
            w.packet(a, TO_SERVER, FIN | ACK, Some(ack), &[], ts_ns)?;
            a.seq[TO_SERVER] = a.seq[TO_SERVER].wrapping_add(1);
            a.phase = Phase::FinAck;
        }
        Phase::FinAck => {
            let ack = a.ack_of(TO_CLIENT);
            w.packet(a, TO_CLIENT, FIN | ACK, Some(ack), &[], ts_ns)?;
            a.seq[TO_CLIENT] = a.seq[TO_CLIENT].wrapping_add(1);
            a.phase = Phase::LastAck;
        }
        Phase::LastAck => {
            let ack = a.ack_of(TO_SERVER);
            w.packet(a, TO_SERVER, ACK, Some(ack), &[], ts_ns)?;
            a.phase = Phase::Done;
        }
        Phase::Done => {}
    }
    Ok(0)
}

// ---------------------------------------------------------------------------
// Packet and file writing.

struct Writer<W: Write> {
    out: W,
    format: Format,
    bytes: u64,
    /// MSS option of SYNs: the segment size plus the 12 bytes of timestamps.
    mss_option: u16,
    hdr: [u8; 128],
}

impl<W: Write> Writer<W> {
    fn new(mut out: W, format: Format, mss: usize) -> io::Result<Writer<W>> {
        let mut bytes = 0;
        match format {
            Format::Pcap => {
                let mut h = [0u8; 24];
                h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
                h[4..6].copy_from_slice(&2u16.to_le_bytes());
                h[6..8].copy_from_slice(&4u16.to_le_bytes());
                h[16..20].copy_from_slice(&262_144u32.to_le_bytes());
                h[20..24].copy_from_slice(&1u32.to_le_bytes()); // Ethernet
                out.write_all(&h)?;
                bytes += 24;
            }
            Format::Pcapng => {
                // Section Header Block.
                let mut shb = [0u8; 28];
                shb[0..4].copy_from_slice(&0x0a0d_0d0au32.to_le_bytes());
                shb[4..8].copy_from_slice(&28u32.to_le_bytes());
                shb[8..12].copy_from_slice(&0x1a2b_3c4du32.to_le_bytes());
                shb[12..14].copy_from_slice(&1u16.to_le_bytes());
                shb[16..24].copy_from_slice(&(-1i64).to_le_bytes());
                shb[24..28].copy_from_slice(&28u32.to_le_bytes());
                out.write_all(&shb)?;
                // Interface Description Block: Ethernet, if_tsresol = 9 (ns).
                let mut idb = [0u8; 32];
                idb[0..4].copy_from_slice(&1u32.to_le_bytes());
                idb[4..8].copy_from_slice(&32u32.to_le_bytes());
                idb[8..10].copy_from_slice(&1u16.to_le_bytes());
                idb[12..16].copy_from_slice(&262_144u32.to_le_bytes());
                idb[16..18].copy_from_slice(&9u16.to_le_bytes());
                idb[18..20].copy_from_slice(&1u16.to_le_bytes());
                idb[20] = 9;
                // 21..24 padding, 24..28 opt_endofopt.
                idb[28..32].copy_from_slice(&32u32.to_le_bytes());
                out.write_all(&idb)?;
                bytes += 60;
            }
        }
        Ok(Writer {
            out,
            format,
            bytes,
            mss_option: (mss + 12).min(65_495) as u16,
            hdr: [0; 128],
        })
    }

    /// One Ethernet/IPv4/TCP packet from side `dir` of connection `a`.
    fn packet(
        &mut self,
        a: &mut Active,
        dir: usize,
        flags: u8,
        ack: Option<u32>,
        payload: &[u8],
        ts_ns: i64,
    ) -> io::Result<()> {
        let (src, dst) = (dir, 1 - dir);
        let syn = flags & SYN != 0;
        let tcp_len = if syn { 40 } else { 32 };
        let frame_len = 14 + 20 + tcp_len + payload.len();
        // Record header first, then the frame headers, then the payload.
        let (rec, pad) = match self.format {
            Format::Pcap => (16, 0),
            Format::Pcapng => (28, (4 - frame_len % 4) % 4),
        };
        let h = &mut self.hdr;
        h[..rec + 14 + 20 + tcp_len].fill(0);
        match self.format {
            Format::Pcap => {
                let secs = (ts_ns / 1_000_000_000) as u32;
                let usecs = ((ts_ns % 1_000_000_000) / 1_000) as u32;
                h[0..4].copy_from_slice(&secs.to_le_bytes());
                h[4..8].copy_from_slice(&usecs.to_le_bytes());
                h[8..12].copy_from_slice(&(frame_len as u32).to_le_bytes());
                h[12..16].copy_from_slice(&(frame_len as u32).to_le_bytes());
            }
            Format::Pcapng => {
                let total = (32 + frame_len + pad) as u32;
                let ts = ts_ns as u64;
                h[0..4].copy_from_slice(&6u32.to_le_bytes());
                h[4..8].copy_from_slice(&total.to_le_bytes());
                // interface 0
                h[12..16].copy_from_slice(&((ts >> 32) as u32).to_le_bytes());
                h[16..20].copy_from_slice(&(ts as u32).to_le_bytes());
                h[20..24].copy_from_slice(&(frame_len as u32).to_le_bytes());
                h[24..28].copy_from_slice(&(frame_len as u32).to_le_bytes());
            }
        }
        let e = rec;
        // Ethernet: 02:00:00:00:00:0{1,2}.
        h[e..e + 6].copy_from_slice(&[2, 0, 0, 0, 0, 1 + dst as u8]);
        h[e + 6..e + 12].copy_from_slice(&[2, 0, 0, 0, 0, 1 + src as u8]);
        h[e + 12..e + 14].copy_from_slice(&0x0800u16.to_be_bytes());
        // IPv4.
        let ip = e + 14;
        h[ip] = 0x45;
        h[ip + 2..ip + 4].copy_from_slice(&((20 + tcp_len + payload.len()) as u16).to_be_bytes());
        h[ip + 4..ip + 6].copy_from_slice(&a.ip_id[src].to_be_bytes());
        a.ip_id[src] = a.ip_id[src].wrapping_add(1);
        h[ip + 6] = 0x40; // DF
        h[ip + 8] = 64;
        h[ip + 9] = 6;
        h[ip + 12..ip + 16].copy_from_slice(&a.ip[src]);
        h[ip + 16..ip + 20].copy_from_slice(&a.ip[dst]);
        let c = fold(sum_be(&h[ip..ip + 20], 0));
        h[ip + 10..ip + 12].copy_from_slice(&(!c).to_be_bytes());
        // TCP.
        let t = ip + 20;
        h[t..t + 2].copy_from_slice(&a.port[src].to_be_bytes());
        h[t + 2..t + 4].copy_from_slice(&a.port[dst].to_be_bytes());
        // For a SYN the sequence number is the ISN (`seq` before the +1).
        h[t + 4..t + 8].copy_from_slice(&a.seq[src].to_be_bytes());
        h[t + 8..t + 12].copy_from_slice(&ack.unwrap_or(0).to_be_bytes());
        h[t + 12] = ((tcp_len / 4) as u8) << 4;
        h[t + 13] = flags;
        h[t + 14..t + 16].copy_from_slice(&(if syn { 65_535u16 } else { 8_192 }).to_be_bytes());
        let tsval = (ts_ns / 1_000_000) as u32;
        let tsecr = if ack.is_some() {
            tsval.wrapping_sub(1)
        } else {
            0
        };
        let o = t + 20;
        if syn {
            // MSS, SACK permitted, timestamps, NOP, window scale 7.
            let [m0, m1] = self.mss_option.to_be_bytes();
            h[o..o + 4].copy_from_slice(&[2, 4, m0, m1]);
            h[o + 4..o + 6].copy_from_slice(&[4, 2]);
            h[o + 6..o + 8].copy_from_slice(&[8, 10]);
            h[o + 8..o + 12].copy_from_slice(&tsval.to_be_bytes());
            h[o + 12..o + 16].copy_from_slice(&tsecr.to_be_bytes());
            h[o + 16..o + 20].copy_from_slice(&[1, 3, 3, 7]);
        } else {
            h[o..o + 4].copy_from_slice(&[1, 1, 8, 10]);
            h[o + 4..o + 8].copy_from_slice(&tsval.to_be_bytes());
            h[o + 8..o + 12].copy_from_slice(&tsecr.to_be_bytes());
        }
        // Checksum: pseudo-header + TCP header + payload.
        let seg_len = (tcp_len + payload.len()) as u64;
        let mut s = sum_be(&h[ip + 12..ip + 20], 6 + seg_len);
        s = sum_be(&h[t..t + tcp_len], s);
        s = sum_be(payload, s);
        let c = fold(s);
        h[t + 16..t + 18].copy_from_slice(&(!c).to_be_bytes());

        self.out.write_all(&h[..t + tcp_len])?;
        self.out.write_all(payload)?;
        let mut written = (t + tcp_len + payload.len()) as u64;
        if self.format == Format::Pcapng {
            let total = (32 + frame_len + pad) as u32;
            let mut tail = [0u8; 7];
            tail[pad..pad + 4].copy_from_slice(&total.to_le_bytes());
            self.out.write_all(&tail[..pad + 4])?;
            written += (pad + 4) as u64;
        }
        self.bytes += written;
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One's-complement sum of big-endian 16-bit words (`bytes` starts on an
/// even offset of the summed data), added to `acc`. Not folded.
fn sum_be(bytes: &[u8], mut acc: u64) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}
