//! Sharded analysis: several threads each read the whole capture and analyse
//! only the TCP connections that hash to them; a merger puts their exchanges
//! back in the order one thread produces them and renumbers connections the
//! Wireshark way, so the output does not depend on the number of threads.
//!
//! Why every worker reads the whole file instead of one reader handing out
//! packets: skipping another shard's packet costs a header parse, far less
//! than copying it to another thread, and no thread becomes the bottleneck.
//! Two ways of reading each byte once were built and measured on 2 cores:
//! one reader thread handing out chunks without copying them (slower on both
//! bench profiles: the reader became the critical path), and the workers
//! reading the file's chunks in turn and each walking all of them (no faster:
//! walking a chunk another core read costs about what the copy saved).
//!
//! Order. A worker emits items (connection opened/closed, exchange) tagged
//! with the frame being processed, so its items are ordered by frame. Every
//! frame belongs to exactly one shard, so merging the workers' streams by
//! frame reproduces the single-threaded order. At end of input the single
//! thread closes connections in `tcp.stream` order; those items are merged
//! by their global connection index. Each batch a worker sends carries a
//! watermark (no later item sorts below it), so the merger never waits for a
//! worker that has nothing to say.
//!
//! Differences from one thread, only at limits: `--max-flows` is split
//! between the shards (the idlest connection of a shard is closed), and the
//! process-wide budget of decompressed bytes is shared in whatever order the
//! threads reach it.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

use crate::capture::{CaptureReader, CaptureStats, LinkType, Packet};
use crate::diagnose::Diagnosis;
use crate::net::{tcp_segment, NetStats, TcpSegment};
use crate::pipeline::{Analyzer, Config, ExchangeSink, ProtoStats};
use crate::tfserving::{Exchange, Transport};

/// Exchanges handed back to their worker at once.
const RETURN_BATCH: usize = 64;
/// Items per batch sent to the merger.
const BATCH: usize = 128;
/// Batches a worker may have in flight before it waits for the merger. Few:
/// lines and exchanges in flight are memory that must stay in cache (16 was
/// 7% slower than 4 on the small-request profile with 2 threads).
const IN_FLIGHT: usize = 4;
/// A worker reports its progress at least every this many frames, so the
/// merger can release other workers' items while this one has none.
const WATERMARK_EVERY: u32 = 4096;

/// The shard of a TCP segment: the same for both directions.
pub fn shard_of(seg: &TcpSegment<'_>, shards: usize) -> usize {
    pick(
        endpoint(seg.src.ip(), seg.src.port()) ^ endpoint(seg.dst.ip(), seg.dst.port()),
        shards,
    )
}

/// The shard of a packet read straight from the headers of the common
/// encapsulations (Ethernet with VLAN tags, Linux cooked, raw IP, BSD
/// loopback; IPv4 without fragmentation, IPv6 with TCP as the first next
/// header). `None` for anything else: the caller then parses fully, and both
/// ways give the same answer for the same addresses.
pub fn shard_of_packet(link: LinkType, data: &[u8], shards: usize) -> Option<usize> {
    let be16 = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (ether, ip) = match link {
        LinkType::ETHERNET => {
            let mut at = 12;
            let mut ether = be16(at)?;
            for _ in 0..2 {
                if ether == 0x8100 || ether == 0x88a8 {
                    at += 4;
                    ether = be16(at)?;
                }
            }
            (Some(ether), data.get(at + 2..)?)
        }
        LinkType::LINUX_SLL => (Some(be16(14)?), data.get(16..)?),
        LinkType::LINUX_SLL2 => (Some(be16(0)?), data.get(20..)?),
        LinkType::RAW
        | LinkType::RAW_BSD12
        | LinkType::RAW_BSD14
        | LinkType::IPV4
        | LinkType::IPV6 => (None, data),
        LinkType::NULL | LinkType::LOOP => (None, data.get(4..)?),
        _ => return None,
    };
    let version = ip.first()? >> 4;
    let key = match (ether, version) {
        (Some(0x0800) | None, 4) => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let head = ip.get(..20)?;
            let fragment = u16::from_be_bytes([head[6], head[7]]) & 0x3fff != 0;
            if ihl < 20 || head[9] != 6 || fragment {
                return None;
            }
            let tcp = ip.get(ihl..ihl + 4)?;
            let src = u32::from_be_bytes([head[12], head[13], head[14], head[15]]);
            let dst = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
            endpoint_v4(src, u16::from_be_bytes([tcp[0], tcp[1]]))
                ^ endpoint_v4(dst, u16::from_be_bytes([tcp[2], tcp[3]]))
        }
        (Some(0x86dd) | None, 6) => {
            let head = ip.get(..44)?;
            if head[6] != 6 {
                return None;
            }
            let addr = |at: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&head[at..at + 16]);
                u128::from_be_bytes(a)
            };
            endpoint_v6(addr(8), u16::from_be_bytes([head[40], head[41]]))
                ^ endpoint_v6(addr(24), u16::from_be_bytes([head[42], head[43]]))
        }
        _ => return None,
    };
    Some(pick(key, shards))
}

// A fixed (unkeyed) mix keeps the assignment, and so per-shard limits, the
// same from run to run; a hostile capture can at worst put every connection
// in one shard, which is the single-threaded speed. Endpoints combine with
// xor so both directions agree.
fn endpoint(ip: IpAddr, port: u16) -> u64 {
    match ip {
        IpAddr::V4(a) => endpoint_v4(u32::from(a), port),
        IpAddr::V6(a) => endpoint_v6(u128::from(a), port),
    }
}

fn endpoint_v4(addr: u32, port: u16) -> u64 {
    mix((u64::from(addr) << 16) | u64::from(port))
}

fn endpoint_v6(addr: u128, port: u16) -> u64 {
    mix((addr as u64) ^ ((addr >> 64) as u64).rotate_left(23) ^ (u64::from(port) << 48))
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn pick(key: u64, shards: usize) -> usize {
    (key % shards.max(1) as u64) as usize
}

/// Sort key of an item: `(frame, 0)` while packets are read, `(FINISH,
/// global connection)` for what the end of input releases.
type Key = (u64, u64);
const FINISH: u64 = u64::MAX;

enum Item {
    Opened {
        frame: u64,
        conn: u64,
    },
    Closed {
        frame: u64,
        conn: u64,
    },
    Exchange {
        frame: u64,
        ex: Box<Exchange>,
        line: Option<Line>,
    },
}

/// Items in order; later items sort at or above `watermark`.
struct Batch {
    items: Vec<Item>,
    watermark: Key,
}

/// What a worker knows at the end, summed (or taken from worker 0) by the caller.
pub struct WorkerEnd {
    pub net: NetStats,
    pub protocols: ProtoStats,
    /// Worker 0 only: the readers' statistics and the packets' time span.
    pub captures: Vec<(String, CaptureStats)>,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

/// The worker's exchange sink: tags items with the current frame and ships
/// them to the merger in batches.
struct ShardSink<'s> {
    output: Output,
    tx: SyncSender<Batch>,
    /// Exchanges the merger is done with, to be freed by the thread that
    /// allocated them: cross-thread frees cost allocators far more.
    back: Receiver<Vec<Spent>>,
    stop: &'s AtomicBool,
    frame: u64,
    items: Vec<Item>,
    /// False once the merger is gone or asked to stop.
    alive: bool,
}

impl ShardSink<'_> {
    fn push(&mut self, item: Item) -> bool {
        self.items.push(item);
        if self.items.len() >= BATCH {
            let watermark = self.key();
            self.send(watermark);
        }
        self.alive
    }

    fn key(&self) -> Key {
        if self.frame == FINISH {
            (FINISH, 0)
        } else {
            (self.frame, 0)
        }
    }

    fn send(&mut self, watermark: Key) {
        if !self.alive {
            self.items.clear();
            return;
        }
        while let Ok(done) = self.back.try_recv() {
            drop(done);
        }
        let items = std::mem::replace(&mut self.items, Vec::with_capacity(BATCH));
        if self.stop.load(Ordering::Relaxed) || self.tx.send(Batch { items, watermark }).is_err() {
            self.alive = false;
        }
    }
}

impl ExchangeSink for ShardSink<'_> {
    fn exchange(&mut self, mut ex: Box<Exchange>) -> bool {
        let frame = self.frame;
        // The merger only adds a diagnosis or warnings to a gRPC call:
        // write its line here, where the exchange is still in this core's
        // cache. A successful call keeps only what diagnosis and the summary
        // read; a failure crosses whole (the summary groups its clients and
        // times). REST calls, whose inputs the merger may type, cross whole
        // and without a line.
        let grpc = ex.transport == Transport::Grpc;
        let line = match self.output {
            Output::Lines if grpc => Line::of(&ex),
            _ => None,
        };
        if grpc && ex.status.ok && (line.is_some() || self.output == Output::Counts) {
            slim(&mut ex);
        }
        self.push(Item::Exchange { frame, ex, line })
    }

    fn connection_opened(&mut self, conn: u64) {
        let frame = self.frame;
        self.push(Item::Opened { frame, conn });
    }

    fn connection_closed(&mut self, conn: u64) {
        let frame = self.frame;
        self.push(Item::Closed { frame, conn });
    }
}

/// What the merged exchanges become, which decides what workers may do
/// ahead of the merger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// JSON Lines: workers write the lines of gRPC calls; the merger splices
    /// in the numbers, a failure's diagnosis and any warnings.
    Lines,
    /// Only the closing summary: workers drop what it does not count.
    Counts,
    /// Kept whole (the table view lists exchanges).
    Whole,
}

/// A successful call with nothing the summary or diagnosis reads: the
/// endpoints, frame lists, texts and notes.
fn slim(ex: &mut Exchange) {
    ex.client = String::new();
    ex.server = String::new();
    ex.request_frames = Vec::new();
    ex.request_id = None;
    ex.path = None;
    ex.notes = Vec::new();
    ex.wireshark_filter = String::new();
    ex.start = None;
}

/// An exchange's JSON line written by its shard thread, with the places
/// where the merger writes what only it knows: the exchange number, the
/// connection's global index (twice), and the diagnosis or warnings.
pub struct Line {
    text: Vec<u8>,
    id: (usize, usize),
    conn: (usize, usize),
    /// Where `null` stands for the diagnosis.
    diagnosis: usize,
    warnings: usize,
    filter: (usize, usize),
}

impl Line {
    /// Writes `ex`'s line with its places marked; None if it has no
    /// connection number in its filter or already has a diagnosis or
    /// warnings (the merger then writes the whole line).
    fn of(ex: &Exchange) -> Option<Line> {
        let mut text = Vec::with_capacity(1024);
        let marks = crate::report::json::write_exchange_marked(&mut text, ex);
        let filter = marks.filter?;
        // Spliced lines must equal lines written whole: check what is cut.
        let digits = |(a, b): (usize, usize)| {
            text.get(a..b)
                .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
        };
        let null = marks.diagnosis + b"null".len();
        let ok = text.get(marks.warnings) == Some(&b']')
            && text.get(marks.diagnosis..null) == Some(b"null")
            && digits(marks.id)
            && digits(marks.connection)
            && digits(filter)
            && marks.id.1 <= marks.connection.0
            && marks.connection.1 <= marks.diagnosis
            && null <= marks.warnings
            && marks.warnings <= filter.0;
        ok.then_some(Line {
            text,
            id: marks.id,
            conn: marks.connection,
            diagnosis: marks.diagnosis,
            warnings: marks.warnings,
            filter,
        })
    }

    /// Appends the final line (no newline).
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        id: u64,
        conn: u64,
        diagnosis: Option<&Diagnosis>,
        warnings: &[String],
    ) {
        let t = &self.text;
        use crate::report::json::int as num;
        out.extend_from_slice(&t[..self.id.0]);
        num(out, id);
        out.extend_from_slice(&t[self.id.1..self.conn.0]);
        num(out, conn);
        match diagnosis {
            Some(d) => {
                out.extend_from_slice(&t[self.conn.1..self.diagnosis]);
                crate::report::json::write_diagnosis(out, d);
                out.extend_from_slice(&t[self.diagnosis + b"null".len()..self.warnings]);
            }
            None => out.extend_from_slice(&t[self.conn.1..self.warnings]),
        }
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            crate::report::json::string(out, w);
        }
        out.extend_from_slice(&t[self.warnings..self.filter.0]);
        num(out, conn);
        out.extend_from_slice(&t[self.filter.1..]);
    }
}

/// What the workers need to read the captures.
pub struct Job<'a> {
    pub captures: &'a [std::path::PathBuf],
    pub config: &'a Config,
    pub shards: usize,
    pub output: Output,
    /// Called by worker 0 for every packet with the bytes consumed so far in
    /// the current file (progress), and at each file's start with its name.
    pub progress: &'a (dyn Fn(Progress<'_>) + Sync),
}

pub enum Progress<'a> {
    File { name: &'a str, size: Option<u64> },
    Consumed(u64),
    FileDone,
}

/// An exchange the merged output is done with, and its line.
pub type Spent = (Box<Exchange>, Option<Line>);

/// Where merged exchanges go: an exchange sink that takes lines written
/// ahead, and can hand back, in the order it received them, the exchanges
/// it is done with.
pub trait Merged: ExchangeSink {
    /// Start collecting spent exchanges.
    fn recycle(&mut self);
    /// An exchange with the line a worker wrote for it.
    fn exchange_with_line(&mut self, ex: Box<Exchange>, line: Option<Line>) -> bool;
    /// Appends, in order, one entry per exchange reported since the last
    /// call: the exchange, or None if the sink keeps it.
    fn spent(&mut self, into: &mut Vec<Option<Spent>>);
}

/// Runs the workers and hands the merged exchanges, in single-threaded
/// order, to `sink`. Returns the workers' ends (index = shard).
pub fn run(job: &Job<'_>, sink: &mut impl Merged) -> Result<Vec<WorkerEnd>, String> {
    let stop = AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| {
        let mut lanes = Vec::with_capacity(job.shards);
        let mut handles = Vec::with_capacity(job.shards);
        for shard in 0..job.shards {
            let (tx, rx) = sync_channel(IN_FLIGHT);
            let (back_tx, back_rx) = channel();
            lanes.push(Lane {
                rx,
                items: VecDeque::new(),
                watermark: (0, 0),
                done: false,
                conns: HashMap::new(),
                back: back_tx,
                returning: Vec::new(),
            });
            handles.push(
                std::thread::Builder::new()
                    .name(format!("tfwire-shard-{shard}"))
                    .spawn_scoped(scope, move || worker(job, shard, tx, back_rx, stop))
                    .map_err(|e| format!("starting a worker thread: {e}"))?,
            );
        }
        let merged = merge(lanes, sink);
        if !merged {
            stop.store(true, Ordering::Relaxed);
        }
        let mut ends = Vec::with_capacity(job.shards);
        for h in handles {
            match h.join() {
                Ok(Ok(end)) => ends.push(end),
                Ok(Err(e)) => return Err(e),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        Ok(ends)
    })
}

fn worker(
    job: &Job<'_>,
    shard: usize,
    tx: SyncSender<Batch>,
    back: Receiver<Vec<Spent>>,
    stop: &AtomicBool,
) -> Result<WorkerEnd, String> {
    let mut config = job.config.clone();
    config.flow.max_flows = (config.flow.max_flows / job.shards).max(1);
    let sink = ShardSink {
        output: job.output,
        tx,
        back,
        stop,
        frame: 0,
        items: Vec::with_capacity(BATCH),
        alive: true,
    };
    let mut analyzer = Analyzer::new(config, sink);
    let lead = shard == 0;
    let mut frame = 1u64;
    let mut end = WorkerEnd {
        net: NetStats::default(),
        protocols: ProtoStats::default(),
        captures: Vec::new(),
        first_ts: None,
        last_ts: None,
    };
    for path in job.captures {
        let mut reader = CaptureReader::open(path).map_err(|e| e.to_string())?;
        if lead {
            let size = std::fs::metadata(path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            (job.progress)(Progress::File {
                name: reader.name(),
                size,
            });
        }
        let mut since = 0u32;
        frame = reader.for_each_packet(frame, |p: &Packet<'_>, consumed| {
            since += 1;
            if since == WATERMARK_EVERY {
                since = 0;
                let s = analyzer.sink();
                s.frame = p.frame;
                s.send((p.frame, 0));
                if lead {
                    (job.progress)(Progress::Consumed(consumed));
                }
            }
            if !analyzer.sink().alive {
                return;
            }
            // A packet's owner counts it; one whose owner cannot be told
            // (not TCP, malformed) is counted by the lead.
            let owner = shard_of_packet(p.link, p.data, job.shards);
            if owner.is_none_or(|o| o == shard) {
                match tcp_segment(p.link, p.data) {
                    Ok(seg) => {
                        if owner.is_some() || shard_of(&seg, job.shards) == shard {
                            analyzer.sink().frame = p.frame;
                            analyzer.segment(&seg, p.frame, p.ts_ns);
                        }
                    }
                    Err(skip) if owner.is_some() || lead => analyzer.skipped(skip),
                    Err(_) => {}
                }
            }
            if lead && p.ts_ns != 0 {
                end.first_ts = Some(end.first_ts.map_or(p.ts_ns, |f| f.min(p.ts_ns)));
                end.last_ts = Some(end.last_ts.map_or(p.ts_ns, |l| l.max(p.ts_ns)));
            }
        });
        if lead {
            (job.progress)(Progress::FileDone);
            end.captures
                .push((reader.name().to_string(), reader.stats().clone()));
        }
        if !analyzer.sink().alive {
            break;
        }
    }
    // Everything read: later items are end-of-input closes.
    analyzer.sink().frame = FINISH;
    analyzer.sink().send((FINISH, 0));
    analyzer.finish();
    end.net = analyzer.net_stats();
    end.protocols = analyzer.proto_stats();
    // Dropping the sink (and its sender) tells the merger this lane is done.
    analyzer.into_sink().send((FINISH, FINISH));
    Ok(end)
}

/// One worker's stream as the merger sees it.
struct Lane {
    rx: Receiver<Batch>,
    items: VecDeque<Item>,
    watermark: Key,
    done: bool,
    /// This shard's connection index → global `tcp.stream` index, for the
    /// connections open now.
    conns: HashMap<u64, u64>,
    back: Sender<Vec<Spent>>,
    returning: Vec<Spent>,
}

impl Lane {
    fn key(&self, item: &Item) -> Key {
        let (frame, conn) = match item {
            Item::Opened { frame, conn } | Item::Closed { frame, conn } => (*frame, *conn),
            Item::Exchange { frame, ex, .. } => (*frame, ex.connection),
        };
        if frame == FINISH {
            (FINISH, self.conns.get(&conn).copied().unwrap_or(0))
        } else {
            (frame, 0)
        }
    }

    /// Blocks for the worker's next batch, or its end.
    fn give_back(&mut self) {
        let done = std::mem::take(&mut self.returning);
        // A worker that has finished frees nothing more; they drop here.
        let _ = self.back.send(done);
    }

    fn receive(&mut self) {
        match self.rx.recv() {
            Ok(Batch { items, watermark }) => {
                self.items.extend(items);
                self.watermark = watermark;
            }
            Err(_) => self.done = true,
        }
    }
}

/// Merges the workers' streams into `sink`; false if the sink stopped.
fn merge(mut lanes: Vec<Lane>, sink: &mut impl Merged) -> bool {
    sink.recycle();
    // The lane of every exchange handed to the sink and not yet spent.
    let mut origin: VecDeque<usize> = VecDeque::new();
    let mut spent = Vec::new();
    let mut next_conn = 0u64;
    let mut next_id = 1u64;
    loop {
        let best = lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.items.front().map(|it| (l.key(it), i)))
            .min();
        // A lane with nothing buffered may still send something that sorts
        // first, unless its watermark is past the best candidate.
        let blocking = lanes.iter().position(|l| {
            l.items.is_empty() && !l.done && best.is_none_or(|(k, _)| l.watermark < k)
        });
        if let Some(i) = blocking {
            lanes[i].receive();
            continue;
        }
        let Some((_, i)) = best else {
            for lane in &mut lanes {
                lane.give_back();
            }
            return true;
        };
        let lane = &mut lanes[i];
        let Some(item) = lane.items.pop_front() else {
            continue;
        };
        match item {
            Item::Opened { conn, .. } => {
                lane.conns.insert(conn, next_conn);
                next_conn += 1;
            }
            Item::Closed { conn, .. } => {
                lane.conns.remove(&conn);
            }
            Item::Exchange { mut ex, line, .. } => {
                let global = lane.conns.get(&ex.connection).copied().unwrap_or(0);
                renumber(&mut ex, next_id, global);
                next_id += 1;
                origin.push_back(i);
                if !sink.exchange_with_line(ex, line) {
                    return false;
                }
                sink.spent(&mut spent);
                for ex in spent.drain(..) {
                    let Some(from) = origin.pop_front() else {
                        break;
                    };
                    if let Some(ex) = ex {
                        let lane = &mut lanes[from];
                        lane.returning.push(ex);
                        if lane.returning.len() >= RETURN_BATCH {
                            lane.give_back();
                        }
                    }
                }
            }
        }
    }
}

/// Gives a worker's exchange its place in the merged output: its sequence
/// number and its connection's global (Wireshark) index.
fn renumber(ex: &mut Exchange, id: u64, conn: u64) {
    ex.id = id;
    if ex.connection == conn {
        return;
    }
    const PREFIX: &str = "tcp.stream eq ";
    let f = &ex.wireshark_filter;
    if let Some(tail) = f.strip_prefix(PREFIX) {
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if tail[..digits].parse() == Ok(ex.connection) {
            let mut new = String::with_capacity(f.len() + 4);
            new.push_str(PREFIX);
            let _ = write!(new, "{conn}");
            new.push_str(&tail[digits..]);
            ex.wireshark_filter = new;
        }
    }
    ex.connection = conn;
}

/// Shards worth using for these inputs: one for standard input or any
/// non-regular file (it cannot be read twice), otherwise `wanted`.
pub fn usable_shards(captures: &[std::path::PathBuf], wanted: usize) -> usize {
    let rereadable = captures
        .iter()
        .all(|p| p.as_os_str() != "-" && std::fs::metadata(p).is_ok_and(|m| m.is_file()));
    if rereadable {
        wanted.max(1)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn fixtures() -> Vec<std::path::PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .expect("fixtures")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn header_shard_agrees_with_the_full_parse_on_every_fixture() {
        let (mut checked, mut fell_back) = (0, 0);
        for path in fixtures() {
            let mut r = CaptureReader::open(&path).expect("open");
            r.for_each_packet(1, |p, _| {
                let Ok(seg) = tcp_segment(p.link, p.data) else {
                    return;
                };
                for n in [2, 3, 5, 8] {
                    match shard_of_packet(p.link, p.data, n) {
                        Some(s) => {
                            assert_eq!(s, shard_of(&seg, n), "{path:?} frame {}", p.frame);
                            checked += 1;
                        }
                        None => fell_back += 1,
                    }
                }
            });
        }
        // Ethernet, SLL2 and IPv6 fixtures are all read from the headers.
        assert!(checked > 1_000, "{checked}");
        assert_eq!(fell_back, 0);
    }

    fn tcp_v4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1000, 65535)
            .write(&mut v, b"payload")
            .expect("build");
        v
    }

    fn tcp_v6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv6(src, dst, 64)
            .tcp(sport, dport, 1000, 65535)
            .write(&mut v, b"payload")
            .expect("build");
        v
    }

    #[test]
    fn both_directions_share_a_shard_and_odd_packets_fall_back() {
        let mut spread = [0usize; 4];
        for i in 0..64u8 {
            let a = tcp_v4([10, 0, 0, i], 40000 + u16::from(i), [10, 0, 1, 1], 8500);
            let b = tcp_v4([10, 0, 1, 1], 8500, [10, 0, 0, i], 40000 + u16::from(i));
            let s = shard_of_packet(LinkType::ETHERNET, &a, 4).expect("ethernet ipv4");
            assert_eq!(Some(s), shard_of_packet(LinkType::ETHERNET, &b, 4));
            spread[s] += 1;
            // The same packet behind a VLAN tag.
            let mut tagged = a.clone();
            tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
            assert_eq!(Some(s), shard_of_packet(LinkType::ETHERNET, &tagged, 4));

            let x = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i];
            let y = [
                0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
            ];
            let c = tcp_v6(x, 5000, y, 8500);
            let d = tcp_v6(y, 8500, x, 5000);
            let s6 = shard_of_packet(LinkType::RAW, &c, 4).expect("raw ipv6");
            assert_eq!(Some(s6), shard_of_packet(LinkType::RAW, &d, 4));
            let seg = tcp_segment(LinkType::RAW, &d).expect("segment");
            assert_eq!(s6, shard_of(&seg, 4));
        }
        assert!(spread.iter().all(|&n| n > 4), "{spread:?}");

        // A fragment, UDP, a cut header: the full parse decides.
        let mut frag = tcp_v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        frag[14 + 6] |= 0x20;
        assert_eq!(shard_of_packet(LinkType::ETHERNET, &frag, 4), None);
        let mut udp = tcp_v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        udp[14 + 9] = 17;
        assert_eq!(shard_of_packet(LinkType::ETHERNET, &udp, 4), None);
        let cut = tcp_v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2);
        assert_eq!(
            shard_of_packet(LinkType::ETHERNET, &cut[..14 + 20 + 3], 4),
            None
        );
        assert_eq!(shard_of_packet(LinkType(147), &cut, 4), None);
    }

    /// A line written by a worker, finished by the merger, is the line the
    /// merger would have written for the final exchange: successes with
    /// warnings, failures with their diagnosis.
    #[test]
    fn spliced_lines_equal_lines_written_whole() {
        use crate::report::json::write_exchange;
        let mut exchanges = crate::pipeline::fixture_exchanges("grpc_basic.pcapng");
        exchanges.extend(crate::pipeline::fixture_exchanges("grpc_diagnosis.pcapng"));
        assert!(exchanges.iter().filter(|e| e.status.ok).count() > 5);
        assert!(exchanges.iter().filter(|e| !e.status.ok).count() > 5);
        // Diagnoses as the merger makes them, in order.
        let mut engine = crate::diagnose::Engine::new(crate::diagnose::SignatureBook::new());
        let mut diagnosed = Vec::new();
        for ex in &exchanges {
            engine.push(Box::new(ex.clone()), &mut |d| {
                diagnosed.push(d);
                true
            });
        }
        engine.finish(&mut |d| {
            diagnosed.push(d);
            true
        });
        assert_eq!(diagnosed.len(), exchanges.len());
        assert!(diagnosed.iter().any(|d| d.diagnosis.is_some()));
        for (i, (ex, diagnosed)) in exchanges.iter().zip(&diagnosed).enumerate() {
            let line = Line::of(ex).expect("a gRPC call's line has every mark");
            // The final exchange is the engine's, renumbered.
            let mut fin = Exchange::clone(diagnosed);
            renumber(&mut fin, 1000 + i as u64, 70_000 + i as u64);
            if fin.status.ok {
                fin.warnings
                    .extend((0..i % 3).map(|k| format!("warning \"{k}\"\n")));
            }
            let (mut spliced, mut whole) = (Vec::new(), Vec::new());
            line.write(
                &mut spliced,
                fin.id,
                fin.connection,
                fin.diagnosis.as_deref(),
                &fin.warnings,
            );
            write_exchange(&mut whole, &fin);
            assert_eq!(
                String::from_utf8_lossy(&spliced),
                String::from_utf8_lossy(&whole)
            );

            // A line that already has a diagnosis or warnings is left to
            // the merger, and so is one whose filter has no connection number.
            if fin.diagnosis.is_some() {
                assert!(Line::of(&fin).is_none());
                fin.diagnosis = None;
            }
            fin.warnings = vec!["w".into()];
            assert!(Line::of(&fin).is_none());
            fin.warnings.clear();
            fin.wireshark_filter = "frame.number == 7".into();
            assert!(Line::of(&fin).is_none());
        }
    }

    #[test]
    fn renumbering_rewrites_only_the_connection_of_the_filter() {
        let conn = crate::net::test_conn(3, "10.0.0.1:5000", "10.0.0.2:8501");
        let mut ex = Exchange::from_rest(1, &conn, None, None);
        assert_eq!(ex.connection, 3);
        ex.wireshark_filter = "tcp.stream eq 3 && frame.number >= 33".into();
        renumber(&mut ex, 9, 12);
        assert_eq!(ex.id, 9);
        assert_eq!(ex.connection, 12);
        assert_eq!(
            ex.wireshark_filter,
            "tcp.stream eq 12 && frame.number >= 33"
        );
        renumber(&mut ex, 10, 12);
        assert_eq!(
            ex.wireshark_filter,
            "tcp.stream eq 12 && frame.number >= 33"
        );
    }
}
