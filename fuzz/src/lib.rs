//! Helpers shared by the fuzz targets and the seed extractor: a cursor over
//! the fuzz input, a pcap writer, a TCP conversation builder, and the whole
//! pipeline as `tfwire analyze` runs it (capture → Analyzer → Engine → report).

use std::io::{self, Cursor};

use tfwire::capture::CaptureReader;
use tfwire::diagnose::{Engine, SignatureBook};
use tfwire::pipeline::{Analyzer, Config, ExchangeSink};
use tfwire::report::{JsonLines, Summary, TableReport};
use tfwire::tfserving::Exchange;

/// Reads structured values off the fuzz input; past the end everything is 0.
pub struct Input<'a> {
    buf: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Input { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.buf.split_first() {
            Some((&b, rest)) => {
                self.buf = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.buf.len());
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        a
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

/// Small limits, so that a fuzz input of a few KiB reaches every limit path.
pub fn tight_config() -> Config {
    let mut c = Config::default();
    c.flow.max_flows = 4;
    c.flow.reassembly.max_buffered_bytes = 4096;
    c.flow.reassembly.max_segments = 16;
    c.http2.max_buffered_frame = 2048;
    c.grpc.messages.max_message = 4096;
    c.grpc.messages.max_messages = 3;
    c.grpc.max_open_calls = 8;
    c
}

/// What `tfwire analyze` does with the exchanges: diagnosis, summary, output.
struct Collector {
    engine: Engine,
    summary: Summary,
    json: JsonLines<io::Sink>,
    table: Option<TableReport>,
}

impl Collector {
    fn report(
        summary: &mut Summary,
        json: &mut JsonLines<io::Sink>,
        table: &mut Option<TableReport>,
        ex: Box<Exchange>,
    ) -> bool {
        summary.add(&ex);
        let ok = json.exchange(&ex);
        if let Some(t) = table {
            t.add(*ex);
        }
        ok
    }
}

impl ExchangeSink for Collector {
    fn exchange(&mut self, ex: Box<Exchange>) -> bool {
        let Collector {
            engine,
            summary,
            json,
            table,
        } = self;
        engine.push(ex, &mut |ex| Collector::report(summary, json, table, ex))
    }
}

/// Runs capture bytes through the whole pipeline. Returns the number of
/// packets read, or None when the bytes are not a capture.
pub fn analyze(bytes: &[u8], config: Config, table: bool) -> Option<u64> {
    let mut reader = CaptureReader::from_reader("fuzz".into(), Cursor::new(bytes)).ok()?;
    let collector = Collector {
        engine: Engine::new(SignatureBook::new()),
        summary: Summary::new(),
        json: JsonLines::new(io::sink(), false),
        table: table.then(|| TableReport::new(true, false)),
    };
    let mut analyzer = Analyzer::new(config, collector);
    reader.for_each_packet(1, |p, _| analyzer.packet(p));
    analyzer.finish();
    let net = analyzer.net_stats();
    let protocols = analyzer.proto_stats();
    let mut c = analyzer.into_sink();
    {
        let Collector {
            engine,
            summary,
            json,
            table,
        } = &mut c;
        engine.finish(&mut |ex| Collector::report(summary, json, table, ex));
    }
    c.summary.capture.add(reader.name(), reader.stats());
    c.summary.network = net;
    c.summary.protocols = protocols;
    c.summary.finish();
    c.json.write(&c.summary);
    let _ = c.json.finish();
    if let Some(t) = &c.table {
        let _ = t.print(&c.summary, &mut io::sink());
    }
    Some(reader.stats().packets)
}

/// Writes a classic pcap file (little endian, microseconds).
pub struct PcapWriter {
    pub out: Vec<u8>,
}

impl PcapWriter {
    pub fn new(link: u32) -> Self {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&262_144u32.to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        PcapWriter { out }
    }

    pub fn record(&mut self, ts_us: u64, data: &[u8], orig_len: u32) {
        self.out
            .extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        self.out
            .extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&orig_len.to_le_bytes());
        self.out.extend_from_slice(data);
    }
}

/// TCP flags for [`tcp_packet`].
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One TCP segment.
pub struct Segment<'a> {
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'a [u8],
}

/// Ethernet + IPv4 + TCP (checksums are left at zero: tfwire never checks them).
pub fn tcp_packet(s: &Segment<'_>) -> Vec<u8> {
    let mut p = Vec::with_capacity(54 + s.payload.len());
    p.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (40 + s.payload.len()).min(usize::from(u16::MAX)) as u16;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&s.src.0);
    p.extend_from_slice(&s.dst.0);
    p.extend_from_slice(&s.src.1.to_be_bytes());
    p.extend_from_slice(&s.dst.1.to_be_bytes());
    p.extend_from_slice(&s.seq.to_be_bytes());
    p.extend_from_slice(&s.ack.to_be_bytes());
    p.extend_from_slice(&[0x50, s.flags]);
    p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(s.payload);
    p
}

/// One step of a TCP conversation in the `pipeline` target's input format:
/// `[ctl][len u16 LE][len bytes]`.
///
/// `ctl` bits: 0 direction (1 = server to client), 1 FIN after the bytes,
/// 2-3 delivery (0 in order, 1 lost, 2 sent twice, 3 held back until after
/// the next step), 4 RST instead of the bytes, 5 new connection from the
/// next client port, 6 clock steps back one second, 7 ACK-only packet.
pub struct Step<'a> {
    pub ctl: u8,
    pub bytes: &'a [u8],
}

pub fn encode_steps(steps: &[Step<'_>]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in steps {
        for chunk in s.bytes.chunks(usize::from(u16::MAX)) {
            v.push(s.ctl);
            v.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            v.extend_from_slice(chunk);
        }
    }
    v
}

/// Builds a pcap of TCP connections between 10.0.0.1 and 10.0.0.2:8500
/// from steps (see [`Step`]); the first byte says whether handshakes are
/// captured (bit 0) and the port of the server (bit 1: 8500 or 8501).
pub fn conversation_pcap(data: &[u8]) -> Vec<u8> {
    const MSS: usize = 1460;
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let handshake = mode & 1 == 0;
    let server_port = if mode & 2 == 0 { 8500 } else { 8501 };
    let mut w = PcapWriter::new(1);
    let mut ts: u64 = 1_700_000_000_000_000;
    let mut client_port: u16 = 40_000;
    // Next sequence numbers: [client, server].
    let mut next = [1_000u32, 5_000_000u32];
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut first = true;
    while !inp.is_empty() {
        let ctl = inp.u8();
        let len = usize::from(inp.u16());
        let bytes = inp.bytes(len);
        if ctl & 0x20 != 0 || first {
            client_port = client_port.wrapping_add(u16::from(!first));
            next = [
                next[0].wrapping_add(100_000),
                next[1].wrapping_add(7_777_777),
            ];
            if handshake {
                let c = ([10, 0, 0, 1], client_port);
                let s = ([10, 0, 0, 2], server_port);
                let syn = Segment {
                    src: c,
                    dst: s,
                    seq: next[0],
                    ack: 0,
                    flags: SYN,
                    payload: &[],
                };
                let syn_ack = Segment {
                    src: s,
                    dst: c,
                    seq: next[1],
                    ack: next[0].wrapping_add(1),
                    flags: SYN | ACK,
                    payload: &[],
                };
                ts += 10;
                w.record(ts, &tcp_packet(&syn), 54);
                ts += 10;
                w.record(ts, &tcp_packet(&syn_ack), 54);
                next = [next[0].wrapping_add(1), next[1].wrapping_add(1)];
            }
            first = false;
        }
        if ctl & 0x40 != 0 {
            ts = ts.saturating_sub(1_000_000);
        }
        let to_client = ctl & 1 != 0;
        let (src, dst) = if to_client {
            (([10, 0, 0, 2], server_port), ([10, 0, 0, 1], client_port))
        } else {
            (([10, 0, 0, 1], client_port), ([10, 0, 0, 2], server_port))
        };
        let (me, peer) = if to_client { (1, 0) } else { (0, 1) };
        let mut packets = Vec::new();
        if ctl & 0x80 != 0 {
            packets.push(tcp_packet(&Segment {
                src,
                dst,
                seq: next[me],
                ack: next[peer],
                flags: ACK,
                payload: &[],
            }));
        } else if ctl & 0x10 != 0 {
            packets.push(tcp_packet(&Segment {
                src,
                dst,
                seq: next[me],
                ack: next[peer],
                flags: RST | ACK,
                payload: &[],
            }));
        } else {
            for chunk in bytes.chunks(MSS) {
                packets.push(tcp_packet(&Segment {
                    src,
                    dst,
                    seq: next[me],
                    ack: next[peer],
                    flags: ACK | PSH,
                    payload: chunk,
                }));
                next[me] = next[me].wrapping_add(chunk.len() as u32);
            }
            if ctl & 2 != 0 {
                packets.push(tcp_packet(&Segment {
                    src,
                    dst,
                    seq: next[me],
                    ack: next[peer],
                    flags: FIN | ACK,
                    payload: &[],
                }));
                next[me] = next[me].wrapping_add(1);
            }
        }
        let mut now = Vec::new();
        match (ctl >> 2) & 3 {
            0 => now = packets,
            1 => {}
            2 => {
                now.extend(packets.iter().cloned());
                now.extend(packets);
            }
            _ => {
                held.extend(packets);
                continue;
            }
        }
        now.append(&mut held);
        for p in now {
            ts += 100;
            w.record(ts, &p, p.len() as u32);
        }
    }
    for p in held {
        ts += 100;
        w.record(ts, &p, p.len() as u32);
    }
    w.out
}
