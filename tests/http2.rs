//! HTTP/2 decoding checked against other implementations and against
//! itself under every way the bytes can be split.

use std::collections::HashMap;

use tfwire::capture::CaptureReader;
use tfwire::http2::frame::{self, flags, FrameHeader, FrameType, HEADER_LEN, PREFACE};
use tfwire::http2::{hpack, Connection, Event, Limits};
use tfwire::net::{ConnInfo, Delivery, Dir, FlowLimits, FlowSink, FlowTable};

use crate::support::fixture;

/// Collects the reassembled bytes of every connection direction.
#[derive(Default)]
struct Streams {
    bytes: HashMap<(u64, Dir), Vec<u8>>,
    gaps: u64,
}

impl FlowSink for Streams {
    fn opened(&mut self, _: &ConnInfo) {}
    fn data(&mut self, conn: u64, dir: Dir, d: Delivery<'_>) {
        match d {
            Delivery::Data { bytes, .. } => self
                .bytes
                .entry((conn, dir))
                .or_default()
                .extend_from_slice(bytes),
            Delivery::Gap { .. } => self.gaps += 1,
            Delivery::End { .. } => {}
        }
    }
    fn closed(&mut self, _: u64) {}
}

fn streams_of(name: &str) -> Streams {
    let mut flows = FlowTable::new(vec![8500], FlowLimits::default());
    let mut s = Streams::default();
    let mut r = CaptureReader::open(&fixture(name)).expect("fixture");
    r.for_each_packet(1, |p, _| flows.packet(p, &mut s));
    flows.finish(&mut s);
    assert_eq!(s.gaps, 0, "{name}: fixture captured without loss");
    s
}

/// Header blocks (HEADERS + CONTINUATION joined) of one direction, in order.
fn header_blocks(mut b: &[u8], client: bool) -> Vec<Vec<u8>> {
    if client {
        assert!(b.starts_with(PREFACE));
        b = &b[PREFACE.len()..];
    }
    let mut blocks = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    while b.len() >= HEADER_LEN {
        let h = FrameHeader::parse(b[..HEADER_LEN].try_into().expect("9 bytes"));
        let end = HEADER_LEN + h.len as usize;
        let payload = &b[HEADER_LEN..end];
        match h.kind {
            FrameType::Headers => {
                let frag = frame::headers_fragment(&h, payload).expect("headers");
                pending = Some(frag.to_vec());
            }
            FrameType::Continuation => pending
                .as_mut()
                .expect("continuation")
                .extend_from_slice(payload),
            _ => {}
        }
        if matches!(h.kind, FrameType::Headers | FrameType::Continuation)
            && h.has(flags::END_HEADERS)
        {
            blocks.push(pending.take().expect("block"));
        }
        b = &b[end..];
    }
    blocks
}

/// Our HPACK decoder and loona-hpack agree on every header block of real
/// grpcio traffic (both directions, dynamic table in use throughout).
#[test]
fn hpack_agrees_with_loona_hpack_on_real_traffic() {
    let mut compared = 0;
    for name in [
        "grpc_basic.pcapng",
        "grpc_concurrent.pcapng",
        "grpc_compressed.pcap",
    ] {
        let s = streams_of(name);
        for ((_, dir), bytes) in &s.bytes {
            let mut ours = hpack::Decoder::new();
            let mut theirs = loona_hpack::Decoder::new();
            for block in header_blocks(bytes, *dir == Dir::ToServer) {
                let a: Vec<(Vec<u8>, Vec<u8>)> = ours
                    .decode(&block)
                    .expect("our decode")
                    .into_iter()
                    .map(|f| (f.name.expect("name known"), f.value.expect("value known")))
                    .collect();
                let b: Vec<(Vec<u8>, Vec<u8>)> = theirs
                    .decode(&block)
                    .expect("loona decode")
                    .into_iter()
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                assert_eq!(a, b, "{name} {dir:?}");
                compared += 1;
            }
        }
    }
    assert!(compared > 300, "compared {compared} blocks");
}

/// Event log of a connection as owned text, for comparisons.
fn events(conn: &mut Connection, dir: Dir, bytes: &[u8], chunk: usize) -> Vec<String> {
    let mut log = Vec::new();
    let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
    for piece in bytes.chunks(chunk) {
        conn.data(dir, piece, 1, 0, &mut |ev| match ev {
            Event::Headers {
                stream,
                fields,
                end_stream,
                error,
                ..
            } => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|f| {
                        let s =
                            |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                        format!("{:?}={:?}", s(f.name), s(f.value))
                    })
                    .collect();
                log.push(format!("H {stream} {end_stream} {error:?} {fields:?}"))
            }
            Event::Data {
                stream,
                data: d,
                end_stream,
                ..
            } => {
                data.entry(stream).or_default().extend_from_slice(d);
                if end_stream {
                    log.push(format!("D {stream} {:?}", data.remove(&stream)));
                }
            }
            other => log.push(format!("{other:?}")),
        });
    }
    let mut rest: Vec<_> = data.into_iter().collect();
    rest.sort();
    log.push(format!("open data {rest:?}"));
    log
}

/// Frames split across segments at every boundary, or many frames per
/// segment, decode to exactly the same events.
#[test]
fn frames_decode_the_same_however_the_bytes_are_split() {
    let s = streams_of("grpc_basic.pcapng");
    for ((_, dir), bytes) in &s.bytes {
        let whole = events(
            &mut Connection::new(Limits::default()),
            *dir,
            bytes,
            usize::MAX,
        );
        assert!(whole.len() > 30, "{dir:?}: {} events", whole.len());
        for chunk in [1, 2, 3, 5, 8, 9, 10, 13, 100, 1000, 16_393] {
            let split = events(&mut Connection::new(Limits::default()), *dir, bytes, chunk);
            assert_eq!(whole, split, "{dir:?} chunk {chunk}");
        }
    }
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A header block whose CONTINUATIONs outgrow the buffer limit is reported
/// as such, with no fields; the next block (static-table fields) still
/// decodes. A block in one HEADERS frame is decoded where it lies.
#[test]
fn header_block_over_the_buffer_limit() {
    let mut wire = PREFACE.to_vec();
    // 40 + 40 bytes of ":method: POST" (static index 3), over a limit of 64.
    wire.extend(frame_bytes(1, 0, 1, &[0x83; 40]));
    wire.extend(frame_bytes(9, flags::END_HEADERS, 1, &[0x83; 40]));
    // Then ":method: GET" (static index 2) in one HEADERS frame.
    wire.extend(frame_bytes(1, flags::END_HEADERS, 3, &[0x82]));
    for chunk in [1, 7, usize::MAX] {
        let limits = Limits {
            max_buffered_frame: 64,
        };
        let log = events(&mut Connection::new(limits), Dir::ToServer, &wire, chunk);
        assert_eq!(log.len(), 3, "{log:#?}");
        assert_eq!(
            log[0],
            "H 1 false Some(\"header block larger than the buffer limit\") []"
        );
        assert!(log[1].starts_with("H 3 false None"), "{}", log[1]);
        assert!(
            log[1].contains(":method") && log[1].contains("GET"),
            "{}",
            log[1]
        );
    }
}

/// Padding on DATA and HEADERS, a header block split into CONTINUATIONs,
/// RST_STREAM and GOAWAY, as a passive observer must see them.
#[test]
fn padding_continuation_reset_goaway() {
    let mut wire = PREFACE.to_vec();
    wire.extend(frame_bytes(4, 0, 0, &[0, 1, 0, 0, 0x10, 0])); // SETTINGS table size 4096
                                                               // HEADERS (padded, priority) with ":method: POST" (static index 3) then
                                                               // CONTINUATION with ":path: /" (static index 4).
    let mut h = vec![2u8]; // pad length
    h.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
    h.push(0x83);
    h.extend_from_slice(&[0, 0]); // padding
    wire.extend(frame_bytes(1, flags::PADDED | flags::PRIORITY, 1, &h));
    wire.extend(frame_bytes(9, flags::END_HEADERS, 1, &[0x84]));
    // DATA padded: pad 3, "abc", padding, END_STREAM.
    wire.extend(frame_bytes(
        0,
        flags::PADDED | flags::END_STREAM,
        1,
        &[3, b'a', b'b', b'c', 0, 0, 0],
    ));
    wire.extend(frame_bytes(3, 0, 3, &8u32.to_be_bytes()));
    let mut ga = 1u32.to_be_bytes().to_vec();
    ga.extend_from_slice(&0u32.to_be_bytes());
    ga.extend_from_slice(b"bye");
    wire.extend(frame_bytes(7, 0, 0, &ga));
    wire.extend(frame_bytes(0xee, 0, 0, b"unknown frame type is ignored"));
    for chunk in [1, 4, usize::MAX] {
        let log = events(
            &mut Connection::new(Limits::default()),
            Dir::ToServer,
            &wire,
            chunk,
        );
        assert_eq!(log.len(), 5, "{log:#?}");
        assert!(log[0].starts_with("H 1 false None"), "{}", log[0]);
        assert!(
            log[0].contains(":method") && log[0].contains(":path"),
            "{}",
            log[0]
        );
        assert_eq!(log[1], "D 1 Some([97, 98, 99])");
        assert!(
            log[2].contains("Reset") && log[2].contains("code: 8"),
            "{}",
            log[2]
        );
        assert!(
            log[3].contains("GoAway") && log[3].contains("last_stream: 1"),
            "{}",
            log[3]
        );
    }
}

/// A gap inside a DATA payload keeps the framing; a gap in a frame header
/// loses it and says so.
#[test]
fn gaps_inside_data_keep_framing() {
    let mut c = Connection::new(Limits::default());
    let mut wire = PREFACE.to_vec();
    wire.extend(frame_bytes(0, 0, 1, &[7u8; 100]));
    let tail = frame_bytes(0, flags::END_STREAM, 1, b"end");
    let mut log = Vec::new();
    let mut sink = |ev: Event<'_>| log.push(format!("{ev:?}"));
    c.data(Dir::ToServer, &wire[..wire.len() - 60], 1, 0, &mut sink);
    c.gap(Dir::ToServer, 60, &mut sink);
    c.data(Dir::ToServer, &tail, 2, 0, &mut sink);
    assert!(
        log.iter()
            .any(|l| l.contains("DataLost") && l.contains("len: 60")),
        "{log:#?}"
    );
    assert!(
        log.last().is_some_and(|l| l.contains("end_stream: true")),
        "{log:#?}"
    );

    let mut c = Connection::new(Limits::default());
    let mut log = Vec::new();
    let mut sink = |ev: Event<'_>| log.push(format!("{ev:?}"));
    c.data(Dir::ToServer, PREFACE, 1, 0, &mut sink);
    c.data(Dir::ToServer, &tail[..4], 1, 0, &mut sink);
    c.gap(Dir::ToServer, 3, &mut sink);
    c.data(Dir::ToServer, &tail[7..], 1, 0, &mut sink);
    assert!(log.iter().any(|l| l.contains("Desync")), "{log:#?}");
    assert_eq!(c.stats().desyncs, 1);
}
