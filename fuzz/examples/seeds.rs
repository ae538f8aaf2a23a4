//! Writes seed corpora for every fuzz target from the committed fixtures:
//!
//!     cargo run --release --manifest-path fuzz/Cargo.toml --example seeds
//!
//! Seeds go to fuzz/corpus/<target>/ (ignored by git). They are extracted
//! with tfwire itself: packets, TCP segments, reassembled HTTP/2 byte
//! streams, header blocks, gRPC DATA payloads, decompressed messages and the
//! TensorProtos inside them.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message as _;
use tfwire::capture::{CaptureReader, LinkType};
use tfwire::grpc::{Deframer, Encoding, MessageLimits};
use tfwire::http2::frame::{flags, FrameHeader, FrameType, HEADER_LEN, PREFACE};
use tfwire::http2::{self, Connection, Event};
use tfwire::net::{tcp_segment, ConnInfo, Delivery, Dir, FlowLimits, FlowSink, FlowTable};
use tfwire::tfserving::pb::tfwire::views::{PredictRequestView, PredictResponseView};
use tfwire_fuzz::{encode_steps, PcapWriter, Step};

/// Fixtures that are missing (not yet committed) are skipped.
const FIXTURES: [&str; 8] = [
    "grpc_basic.pcapng",
    "grpc_compressed.pcap",
    "grpc_concurrent.pcapng",
    "grpc_ipv6_sll2.pcap",
    "grpc_large.pcapng",
    "rest_basic.pcapng",
    "mixed_grpc_rest.pcapng",
    "protocol_mismatch.pcapng",
];
/// Largest seed written (libFuzzer's -max_len follows the corpus).
const MAX_SEED: usize = 128 << 10;
const LINKS: [u32; 11] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147];

struct Corpus {
    root: PathBuf,
    count: HashMap<&'static str, usize>,
}

impl Corpus {
    fn put(&mut self, target: &'static str, name: &str, bytes: &[u8]) {
        if bytes.is_empty() || bytes.len() > MAX_SEED {
            return;
        }
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("corpus dir");
        let n = self.count.entry(target).or_default();
        *n += 1;
        let path = dir.join(format!("seed-{name}-{n:04}"));
        fs::File::create(path)
            .and_then(|mut f| f.write_all(bytes))
            .expect("write seed");
    }
}

struct Owned {
    link: LinkType,
    ts_ns: i64,
    data: Vec<u8>,
    orig_len: u32,
}

fn packets(path: &Path) -> Vec<Owned> {
    let mut r = CaptureReader::open(path).expect("fixture opens");
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

/// Reassembled bytes per connection, in delivery order.
#[derive(Default)]
struct Conversations {
    steps: HashMap<u64, Vec<(Dir, Vec<u8>)>>,
}

impl FlowSink for Conversations {
    fn opened(&mut self, _: &ConnInfo) {}
    fn data(&mut self, conn: u64, dir: Dir, d: Delivery<'_>) {
        if let Delivery::Data { bytes, .. } = d {
            let steps = self.steps.entry(conn).or_default();
            match steps.last_mut() {
                Some((d, b)) if *d == dir => b.extend_from_slice(bytes),
                _ => steps.push((dir, bytes.to_vec())),
            }
        }
    }
    fn closed(&mut self, _: u64) {}
}

fn pcap_of(pkts: &[Owned]) -> Vec<u8> {
    let link = pkts.first().map_or(1, |p| p.link.0);
    let mut w = PcapWriter::new(link);
    for p in pkts.iter().filter(|p| p.link.0 == link) {
        w.record((p.ts_ns / 1_000) as u64, &p.data, p.orig_len);
    }
    w.out
}

fn capture_seeds(c: &mut Corpus, name: &str, raw: &[u8], pkts: &[Owned]) {
    for target in ["capture", "analyze"] {
        if raw.len() <= MAX_SEED {
            c.put(target, name, raw);
        }
        c.put(target, name, &raw[..raw.len().min(16 << 10)]);
        for n in [20, 60, 200] {
            c.put(target, name, &pcap_of(&pkts[..n.min(pkts.len())]));
        }
    }
}

fn packet_seeds(c: &mut Corpus, name: &str, pkts: &[Owned]) {
    let sel = |lt: u32| LINKS.iter().position(|&l| l == lt).unwrap_or(10) as u8;
    for p in pkts.iter().take(12) {
        let mut v = vec![sel(p.link.0)];
        v.extend_from_slice(&p.data);
        c.put("packet", name, &v);
        if p.link == LinkType::ETHERNET && p.data.len() > 14 {
            let ip = &p.data[14..];
            for lt in [101, 228, 12, 14] {
                let mut v = vec![sel(lt)];
                v.extend_from_slice(ip);
                c.put("packet", name, &v);
            }
            let mut null = vec![sel(0), 2, 0, 0, 0];
            null.extend_from_slice(ip);
            c.put("packet", name, &null);
            let mut lo = vec![sel(108), 0, 0, 0, 2];
            lo.extend_from_slice(ip);
            c.put("packet", name, &lo);
            let mut sll = vec![sel(113)];
            sll.extend_from_slice(&[0; 14]);
            sll.extend_from_slice(&p.data[12..14]);
            sll.extend_from_slice(ip);
            c.put("packet", name, &sll);
        }
    }
}

/// Reassembly ops (see fuzz_targets/reassembly.rs) for each direction of
/// the first connections.
fn reassembly_seeds(c: &mut Corpus, name: &str, pkts: &[Owned]) {
    let mut dirs: HashMap<(String, String), (u32, Vec<u8>)> = HashMap::new();
    for p in pkts {
        let Ok(s) = tcp_segment(p.link, &p.data) else {
            continue;
        };
        let key = (s.src.to_string(), s.dst.to_string());
        if !dirs.contains_key(&key) && dirs.len() >= 8 {
            continue;
        }
        let (next, ops) = dirs.entry(key.clone()).or_insert_with(|| (s.seq, vec![0]));
        if ops.len() == 1 {
            ops.extend_from_slice(&s.seq.to_le_bytes());
        }
        let mut seq = s.seq;
        let chunks: Vec<&[u8]> = if s.payload.is_empty() {
            vec![&[]]
        } else {
            s.payload.chunks(255).collect()
        };
        for (i, chunk) in chunks.iter().enumerate() {
            let mut op = 0u8;
            if s.syn && i == 0 {
                op |= 0x08;
            }
            if s.fin && i + 1 == chunks.len() {
                op |= 0x10;
            }
            if s.rst {
                op |= 0x60;
            }
            let delta = seq.wrapping_sub(*next) as i32;
            if let Ok(d) = i16::try_from(delta) {
                ops.push(op);
                ops.extend_from_slice(&d.to_le_bytes());
            } else {
                ops.push(op | 7);
                ops.extend_from_slice(&seq.to_le_bytes());
            }
            ops.push(chunk.len() as u8);
            ops.extend_from_slice(chunk);
            let end = seq.wrapping_add(chunk.len() as u32);
            if end.wrapping_sub(*next) as i32 > 0 {
                *next = end;
            }
            seq = end;
        }
        // The ACK of this segment acknowledges the opposite direction.
        if let Some(ack) = s.ack {
            let rev = (key.1.clone(), key.0.clone());
            if let Some((rnext, rops)) = dirs.get_mut(&rev) {
                if let Ok(d) = i16::try_from(ack.wrapping_sub(*rnext) as i32) {
                    rops.push(5);
                    rops.extend_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
    for (_, (_, ops)) in dirs {
        c.put("reassembly", name, &ops[..ops.len().min(32 << 10)]);
    }
}

/// HTTP/2 frames of one direction: header blocks (HEADERS + CONTINUATION).
fn header_blocks(mut b: &[u8]) -> Vec<Vec<u8>> {
    if b.starts_with(PREFACE) {
        b = &b[PREFACE.len()..];
    }
    let mut blocks = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    while b.len() >= HEADER_LEN {
        let Ok(h) = b[..HEADER_LEN].try_into().map(|h| FrameHeader::parse(&h)) else {
            break;
        };
        let end = HEADER_LEN + h.len as usize;
        let Some(payload) = b.get(HEADER_LEN..end) else {
            break;
        };
        match h.kind {
            FrameType::Headers => {
                if let Ok(frag) = http2::frame::headers_fragment(&h, payload) {
                    pending = Some(frag.to_vec());
                }
            }
            FrameType::Continuation => {
                if let Some(p) = pending.as_mut() {
                    p.extend_from_slice(payload);
                }
            }
            _ => {}
        }
        if matches!(h.kind, FrameType::Headers | FrameType::Continuation)
            && h.has(flags::END_HEADERS)
        {
            if let Some(block) = pending.take() {
                blocks.push(block);
            }
        }
        b = &b[end..];
    }
    blocks
}

fn conversation_seeds(c: &mut Corpus, name: &str, pkts: &[Owned]) {
    let mut flows = FlowTable::new(vec![8500, 8501], FlowLimits::default());
    let mut conv = Conversations::default();
    for (i, p) in pkts.iter().enumerate() {
        flows.packet(
            &tfwire::capture::Packet {
                frame: i as u64 + 1,
                ts_ns: p.ts_ns,
                link: p.link,
                data: &p.data,
                orig_len: p.orig_len,
            },
            &mut conv,
        );
    }
    flows.finish(&mut conv);
    let mut ids: Vec<u64> = conv.steps.keys().copied().collect();
    ids.sort_unstable();
    for id in ids.into_iter().take(12) {
        let steps = &conv.steps[&id];
        let d = |dir: Dir| u8::from(dir == Dir::ToClient);

        // pipeline: mode 0 (handshakes, port 8500), steps in order, FIN last.
        let mut st: Vec<Step<'_>> = steps
            .iter()
            .map(|(dir, b)| Step {
                ctl: d(*dir),
                bytes: b,
            })
            .collect();
        if let Some(last) = st.last_mut() {
            last.ctl |= 2;
        }
        let mut seed = vec![0u8];
        seed.extend(encode_steps(&st));
        seed.truncate(MAX_SEED);
        c.put("pipeline", name, &seed);

        // http2: from the start, then the same bytes mid-connection.
        for mode in [0u8, 1] {
            let mut v = vec![mode];
            for (dir, b) in steps {
                for chunk in b.chunks(usize::from(u16::MAX)) {
                    v.push(d(*dir));
                    v.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
                    v.extend_from_slice(chunk);
                }
            }
            v.truncate(MAX_SEED);
            c.put("http2", name, &v);
        }

        // hpack: the header blocks of each direction, in order.
        for dir in [Dir::ToServer, Dir::ToClient] {
            let all: Vec<u8> = steps
                .iter()
                .filter(|(x, _)| *x == dir)
                .flat_map(|(_, b)| b.iter().copied())
                .collect();
            let mut v = vec![0u8];
            for block in header_blocks(&all) {
                v.push(0);
                v.extend_from_slice(&(block.len() as u16).to_le_bytes());
                v.extend_from_slice(&block);
            }
            c.put("hpack", name, &v);
        }

        if steps.first().is_some_and(|(_, b)| b.starts_with(PREFACE)) {
            grpc_seeds(c, name, steps);
        } else {
            http1_seeds(c, name, steps);
        }
    }
}

/// HTTP/1 conversations and the JSON bodies in them.
fn http1_seeds(c: &mut Corpus, name: &str, steps: &[(Dir, Vec<u8>)]) {
    let mut v = vec![0u8];
    for (dir, b) in steps {
        for chunk in b.chunks(usize::from(u16::MAX)) {
            v.push(u8::from(*dir == Dir::ToClient));
            v.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            v.extend_from_slice(chunk);
        }
    }
    v.truncate(MAX_SEED);
    c.put("http1", name, &v);
    let mut conn = tfwire::http1::Connection::new(tfwire::http1::Limits::default());
    let mut bodies = Vec::new();
    let mut urls = Vec::new();
    let mut out = |ev: tfwire::http1::Event| {
        let tfwire::http1::Event::Exchange { request, response } = ev;
        for m in request.iter().chain(response.iter()) {
            if !m.body.is_empty() {
                bodies.push(m.body.clone());
            }
            if let tfwire::http1::StartLine::Request { target, .. } = &m.start {
                urls.push(target.clone());
            }
        }
    };
    for (dir, b) in steps {
        conn.data(*dir, b, 1, 0, &mut out);
    }
    conn.close(&mut out);
    for (i, b) in bodies.iter().take(24).enumerate() {
        let mut v = vec![(i % 5) as u8];
        v.extend_from_slice(b);
        c.put("json", name, &v);
    }
    for u in urls.iter().take(8) {
        let mut v = vec![0x80u8];
        v.extend_from_slice(u.as_bytes());
        c.put("json", name, &v);
    }
}

/// gRPC DATA payloads per stream direction, decoded messages and tensors.
fn grpc_seeds(c: &mut Corpus, name: &str, steps: &[(Dir, Vec<u8>)]) {
    let mut conn = Connection::new(http2::Limits::default());
    let mut payloads: HashMap<(u32, Dir), Vec<u8>> = HashMap::new();
    let mut encodings: HashMap<(u32, Dir), Encoding> = HashMap::new();
    for (dir, b) in steps {
        conn.data(*dir, b, 1, 0, &mut |ev| match ev {
            Event::Headers {
                stream,
                dir,
                fields,
                ..
            } => {
                for f in fields {
                    if f.name.as_deref() == Some(b"grpc-encoding") {
                        let v = f.value.as_deref().map(String::from_utf8_lossy);
                        encodings.insert((stream, dir), Encoding::from_header(v.as_deref()));
                    }
                }
            }
            Event::Data {
                stream, dir, data, ..
            } => payloads
                .entry((stream, dir))
                .or_default()
                .extend_from_slice(data),
            _ => {}
        });
    }
    let mut keys: Vec<_> = payloads.keys().copied().collect();
    keys.sort_by_key(|(s, d)| (*s, d.index()));
    for key in keys.into_iter().take(16) {
        let data = &payloads[&key];
        let enc = encodings.get(&key).copied().unwrap_or(Encoding::Identity);
        let mode = match enc {
            Encoding::Identity => 0u8,
            Encoding::Gzip => 1,
            Encoding::Deflate => 2,
            Encoding::Unsupported => 3,
        };
        let mut v = vec![mode];
        for chunk in data.chunks(usize::from(u16::MAX)) {
            v.push(0);
            v.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            v.extend_from_slice(chunk);
        }
        c.put("grpc", name, &v);

        let mut d = Deframer::new(MessageLimits::default());
        d.encoding = enc;
        d.push(data);
        d.finish();
        for m in d.messages.iter().filter(|m| m.complete).take(2) {
            c.put("protobuf", name, &m.data);
            let tensors: Vec<Vec<u8>> = if key.1 == Dir::ToServer {
                PredictRequestView::decode(m.data.clone())
                    .map(|r| r.inputs.into_values().map(|t| t.to_vec()).collect())
                    .unwrap_or_default()
            } else {
                PredictResponseView::decode(m.data.clone())
                    .map(|r| r.outputs.into_values().map(|t| t.to_vec()).collect())
                    .unwrap_or_default()
            };
            for t in tensors.iter().take(4) {
                c.put("protobuf", name, t);
            }
        }
    }
}

/// Hand-made seeds for paths the fixtures do not take.
fn synthetic_seeds(c: &mut Corpus) {
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    let zeros = vec![0u8; 4 << 20];
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&zeros).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    z.write_all(&zeros).expect("zlib");
    let z = z.finish().expect("zlib");
    for (mode, body) in [(1u8, &gz), (5, &gz), (2, &z), (6, &z)] {
        let mut msg = vec![1u8];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes());
        msg.extend_from_slice(body);
        let mut v = vec![mode];
        for chunk in msg.chunks(usize::from(u16::MAX)) {
            v.push(0);
            v.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            v.extend_from_slice(chunk);
        }
        c.put("grpc", "bomb", &v);
    }
    // HPACK: size updates, huge indices, Huffman garbage, RFC 7541 C.4.1.
    let blocks: [&[u8]; 5] = [
        &[0x3f, 0xe1, 0x1f],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0x40, 0x85, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, b'v'],
        &[
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ],
        &[0x20, 0x3f, 0x9a, 0x0a, 0x82],
    ];
    for mode in [0u8, 1, 2, 3] {
        let mut v = vec![mode];
        for b in blocks {
            v.push(0);
            v.extend_from_slice(&(b.len() as u16).to_le_bytes());
            v.extend_from_slice(b);
        }
        c.put("hpack", "synthetic", &v);
    }
}

fn main() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| here.join("corpus"), PathBuf::from);
    let mut c = Corpus {
        root,
        count: HashMap::new(),
    };
    for name in FIXTURES {
        let path = here.join("..").join("fixtures").join(name);
        let Ok(raw) = fs::read(&path) else {
            continue;
        };
        let pkts = packets(&path);
        let short = name.split('.').next().unwrap_or(name);
        capture_seeds(&mut c, short, &raw, &pkts);
        packet_seeds(&mut c, short, &pkts);
        reassembly_seeds(&mut c, short, &pkts);
        conversation_seeds(&mut c, short, &pkts);
    }
    synthetic_seeds(&mut c);
    let mut counts: Vec<_> = c.count.into_iter().collect();
    counts.sort();
    for (t, n) in counts {
        println!("{t}: {n} seeds");
    }
}
