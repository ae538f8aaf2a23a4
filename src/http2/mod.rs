//! Passive HTTP/2 decoder: one `Connection` per TCP connection, fed the
//! reassembled bytes of each direction, emitting header blocks, DATA payload
//! chunks, resets and GOAWAYs per stream.
//!
//! DATA payloads are streamed straight from the packet bytes (never buffered
//! here); only control frames and header blocks are held until complete.

pub mod frame;
pub mod hpack;
pub mod huffman;

use serde::Serialize;

use crate::net::Dir;
use frame::{flags, FrameHeader, FrameType, HEADER_LEN, PREFACE};
pub use hpack::{FieldRef, HeaderBlock, HeaderField};

/// What the connection decoder reports, in wire order per direction.
#[derive(Debug)]
pub enum Event<'a> {
    /// A complete header block (HEADERS plus CONTINUATIONs). `fields` is empty
    /// and `error` set when HPACK could not decode it.
    Headers {
        stream: u32,
        dir: Dir,
        fields: &'a HeaderBlock,
        end_stream: bool,
        error: Option<String>,
        frame: u64,
        ts_ns: i64,
    },
    /// A piece of a DATA frame's payload (padding removed).
    Data {
        stream: u32,
        dir: Dir,
        data: &'a [u8],
        end_stream: bool,
        frame: u64,
        ts_ns: i64,
    },
    /// Payload bytes of a DATA frame that the capture lost.
    DataLost { stream: u32, dir: Dir, len: u64 },
    Reset {
        stream: u32,
        dir: Dir,
        code: u32,
        frame: u64,
        ts_ns: i64,
    },
    GoAway {
        dir: Dir,
        last_stream: u32,
        code: u32,
        debug: &'a [u8],
        frame: u64,
        ts_ns: i64,
    },
    /// Framing was lost in this direction (a gap hit frame headers or a
    /// control frame); streams open in it will not see their end.
    Desync { dir: Dir },
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest control frame or header block held in memory.
    pub max_buffered_frame: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_buffered_frame: 1 << 20,
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub frames: u64,
    pub data_frames: u64,
    pub header_blocks: u64,
    pub frame_errors: u64,
    pub hpack_errors: u64,
    pub unknown_header_refs: u64,
    pub oversized_frames: u64,
    pub desyncs: u64,
    pub bytes_unsynced: u64,
    /// Times framing was found again after a loss or a mid-connection start.
    pub resyncs: u64,
}

#[derive(Debug)]
enum ReadState {
    /// Expecting the client preface; `have` bytes of it matched so far.
    Preface {
        have: usize,
    },
    Header,
    /// Inside a DATA frame: optional pad-length byte, then data, then padding.
    Data {
        hdr: FrameHeader,
        need_pad_len: bool,
        data_left: usize,
        pad_left: usize,
    },
    /// Collecting a non-DATA frame payload into `Half::buf`.
    Buffered {
        hdr: FrameHeader,
    },
    /// Skipping an oversized frame.
    Skip {
        left: usize,
    },
    /// Framing lost (a capture gap, or a capture that started mid-connection):
    /// bytes are searched for a plausible chain of frame headers.
    Unsynced,
}

/// Bytes held while searching for a frame boundary.
const RESYNC_WINDOW: usize = 1 << 20;

/// Whether a frame header could have been sent by this side of a gRPC
/// connection (RFC 9113 §6: types, flags, lengths and stream rules).
fn plausible(h: &FrameHeader, raw_stream_high_bit: bool, dir: Dir) -> bool {
    if raw_stream_high_bit {
        return false;
    }
    let len = h.len as usize;
    let s = h.stream;
    // gRPC never pushes: every stream is client-initiated, hence odd.
    let stream_ok = s % 2 == 1;
    match h.kind {
        FrameType::Data => stream_ok && h.flags & !(flags::END_STREAM | flags::PADDED) == 0,
        FrameType::Headers => {
            stream_ok
                && h.flags
                    & !(flags::END_STREAM | flags::END_HEADERS | flags::PADDED | flags::PRIORITY)
                    == 0
                && len <= 1 << 20
        }
        FrameType::Priority => stream_ok && len == 5 && h.flags == 0,
        FrameType::RstStream => stream_ok && len == 4 && h.flags == 0,
        FrameType::Settings => {
            s == 0
                && len % 6 == 0
                && h.flags & !flags::ACK == 0
                && (h.flags == 0 || len == 0)
                && len <= 36 * 6
        }
        FrameType::PushPromise => false,
        FrameType::Ping => s == 0 && len == 8 && h.flags & !flags::ACK == 0,
        FrameType::GoAway => s == 0 && (8..=1 << 16).contains(&len) && h.flags == 0,
        FrameType::WindowUpdate => (s == 0 || stream_ok) && len == 4 && h.flags == 0,
        FrameType::Continuation => {
            stream_ok && h.flags & !flags::END_HEADERS == 0 && len <= 1 << 20
        }
        FrameType::Unknown(_) => {
            let _ = dir;
            false
        }
    }
}

/// Where a chain of frame headers starting at one offset stands.
#[derive(Debug, PartialEq, Eq)]
enum Chain {
    Found,
    /// Plausible so far; more bytes are needed to confirm it. The answer
    /// stays Wait until the bytes are at least this long (they only grow).
    Wait(usize),
    No,
}

/// Whether consecutive frame headers from `start` are all plausible: two
/// complete frames followed by a third header (or the end of the bytes
/// exactly), so random payload bytes are not mistaken for one.
fn chain_at(b: &[u8], start: usize, dir: Dir) -> Chain {
    let mut at = start;
    let mut frames = 0;
    loop {
        let Some(raw) = b.get(at..at + HEADER_LEN) else {
            // Ran out of bytes on a frame boundary.
            if frames >= 2 && at == b.len() {
                return Chain::Found;
            }
            return Chain::Wait(at + HEADER_LEN);
        };
        let arr: [u8; HEADER_LEN] = match raw.try_into() {
            Ok(a) => a,
            Err(_) => return Chain::No,
        };
        let h = FrameHeader::parse(&arr);
        if !plausible(&h, arr[5] & 0x80 != 0, dir) {
            return Chain::No;
        }
        frames += 1;
        if frames >= 3 {
            return Chain::Found;
        }
        at += HEADER_LEN + h.len as usize;
        if at > b.len() {
            // The frame runs past what we have: confirm with more bytes (two
            // frames ending exactly at the end of the bytes already count).
            return Chain::Wait(if frames >= 2 { at } else { at + HEADER_LEN });
        }
    }
}

/// Starts a `ChainScan` keeps waiting for more bytes: its memory stays O(1)
/// whatever the bytes (a plausible header can start at every byte). Dropping
/// one only delays a find: the next real frame boundary is a candidate too,
/// scanned when its header arrives.
pub(crate) const MAX_WAITING: usize = 64;

/// Looks for the earliest start of a plausible frame chain (`chain_at`) in
/// bytes that grow between calls: resynchronising after a gap, and guessing
/// the protocol of a connection picked up mid-way.
///
/// A payload byte pattern that looks like a large frame header must not hide
/// the real boundary after it, so every offset is a candidate. Each is
/// scanned once, when its header is whole; one still plausible waits with
/// the length its answer can change at and is checked again only then, so
/// junk costs linear time however it is cut into deliveries. At most
/// `MAX_WAITING` starts wait (O(1) memory whatever the bytes): when full, the
/// one waiting for the most bytes goes, as random bytes read as a header
/// mostly claim a length far beyond any real frame around them.
#[derive(Debug, Default)]
pub struct ChainScan {
    /// Starts below this had a whole frame header and were scanned.
    next: usize,
    /// (length of the bytes to wait for, start), in start order, all below
    /// `next`. Length 0: found already, checked again if asked again.
    waiting: Vec<(usize, usize)>,
    /// No start waits for more than this (it may be stale, too high).
    longest: usize,
}

impl ChainScan {
    /// The earliest start of a plausible chain in `b`, among the starts not
    /// dropped. `b` must extend the bytes of the previous call (or those
    /// minus a `shift`) and `dir` stay the same.
    pub fn find(&mut self, b: &[u8], dir: Dir) -> Option<usize> {
        let len = b.len();
        // Waiting starts all precede new ones: one found is the earliest.
        let mut found = None;
        let mut longest = self.longest;
        self.waiting.retain_mut(|(t, s)| {
            if found.is_some() || *t > len {
                return true;
            }
            match chain_at(b, *s, dir) {
                Chain::Found => {
                    *t = 0;
                    found = Some(*s);
                    true
                }
                Chain::Wait(w) => {
                    *t = w;
                    longest = longest.max(w);
                    true
                }
                Chain::No => false,
            }
        });
        self.longest = longest;
        if found.is_some() {
            return found;
        }
        // A start whose header is still incomplete waits for `next` to reach it.
        while self.next + HEADER_LEN <= len {
            let s = self.next;
            self.next += 1;
            match chain_at(b, s, dir) {
                // Two frames ending exactly at the end of `b` may not be
                // followed by a plausible header: kept, so that asked again
                // the scan checks it again with more bytes, as a rescan
                // would. Neither caller asks again: the resync commits to
                // the first find (a third header is not awaited, as before)
                // and the protocol guess is decided by it.
                Chain::Found => {
                    self.wait(0, s);
                    return Some(s);
                }
                Chain::Wait(t) => self.wait(t, s),
                Chain::No => {}
            }
        }
        None
    }

    /// Keeps `s` (above every waiting start) waiting for length `t`.
    fn wait(&mut self, t: usize, s: usize) {
        if self.waiting.len() >= MAX_WAITING {
            // Junk tends to claim ever longer frames: then `s` goes at once.
            if t >= self.longest {
                return;
            }
            // Drop whichever waits longest (the latest start of those
            // waiting as long), `s` itself unless another waits longer.
            let mut far = (0, 0);
            for (i, &(u, _)) in self.waiting.iter().enumerate() {
                if u >= far.1 {
                    far = (i, u);
                }
            }
            if far.1 <= t {
                self.longest = far.1;
                return;
            }
            self.waiting.remove(far.0);
            self.longest = self.waiting.iter().map(|w| w.0).max().unwrap_or(0);
        }
        self.longest = self.longest.max(t);
        self.waiting.push((t, s));
    }

    /// The bytes lost their first `n`: offsets move back by `n`, and the
    /// starts among the lost bytes are forgotten.
    pub fn shift(&mut self, n: usize) {
        self.next = self.next.saturating_sub(n);
        self.longest = self.longest.saturating_sub(n);
        self.waiting.retain_mut(|(t, s)| match s.checked_sub(n) {
            Some(k) => {
                *s = k;
                // A length already reached stays reached.
                *t = t.saturating_sub(n);
                true
            }
            None => false,
        });
    }

    /// The earliest start that may still be found: bytes before it never
    /// start a chain this scan reports.
    pub fn first_live(&self) -> usize {
        self.waiting.first().map_or(self.next, |&(_, s)| s)
    }

    /// Starts waiting for more bytes (at most `MAX_WAITING`).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Forgets everything, for bytes that start over.
    pub fn clear(&mut self) {
        self.next = 0;
        self.longest = 0;
        self.waiting.clear();
    }
}

struct PendingBlock {
    stream: u32,
    end_stream: bool,
    buf: Vec<u8>,
    oversized: bool,
}

struct Half {
    dir: Dir,
    state: ReadState,
    /// Bytes held while `Unsynced`, and the search for a frame boundary in them.
    resync: Vec<u8>,
    resync_scan: ChainScan,
    hdr_buf: [u8; HEADER_LEN],
    hdr_have: usize,
    buf: Vec<u8>,
    pending: Option<PendingBlock>,
    hpack: hpack::Decoder,
}

impl Half {
    /// Discards the first `n` resync bytes, moving the search offsets along.
    fn drop_resync(&mut self, n: usize) {
        self.resync.drain(..n);
        self.resync_scan.shift(n);
    }
}

/// One HTTP/2 connection seen from the outside.
pub struct Connection {
    halves: [Half; 2],
    limits: Limits,
    stats: Stats,
    fields: HeaderBlock,
}

impl Connection {
    /// A connection observed from its start: the client begins with the preface.
    pub fn new(limits: Limits) -> Self {
        Connection::build(limits, true)
    }

    /// A connection picked up after its start: no preface, frame boundaries
    /// found by searching, HPACK tables partly unknown.
    pub fn new_mid_connection(limits: Limits) -> Self {
        Connection::build(limits, false)
    }

    fn build(limits: Limits, from_start: bool) -> Self {
        let half = |dir: Dir| {
            let state = match (from_start, dir) {
                (true, Dir::ToServer) => ReadState::Preface { have: 0 },
                (true, Dir::ToClient) => ReadState::Header,
                (false, _) => ReadState::Unsynced,
            };
            Half {
                dir,
                state,
                resync: Vec::new(),
                resync_scan: ChainScan::default(),
                hdr_buf: [0; HEADER_LEN],
                hdr_have: 0,
                buf: Vec::new(),
                pending: None,
                hpack: if from_start {
                    hpack::Decoder::new()
                } else {
                    hpack::Decoder::new_mid_connection()
                },
            }
        };
        Connection {
            halves: [half(Dir::ToServer), half(Dir::ToClient)],
            limits,
            stats: Stats::default(),
            fields: HeaderBlock::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.unknown_header_refs = self.halves.iter().map(|h| h.hpack.unknown_refs()).sum();
        s
    }

    /// Feeds reassembled bytes of one direction.
    pub fn data(
        &mut self,
        dir: Dir,
        mut bytes: &[u8],
        frame: u64,
        ts_ns: i64,
        sink: &mut impl FnMut(Event<'_>),
    ) {
        let i = dir.index();
        while !bytes.is_empty() {
            let half = &mut self.halves[i];
            match &mut half.state {
                ReadState::Preface { have } => {
                    let want = &PREFACE[*have..];
                    let n = want.len().min(bytes.len());
                    if bytes[..n] != want[..n] {
                        // Not the preface after all: treat as a frame stream.
                        half.state = ReadState::Header;
                        continue;
                    }
                    *have += n;
                    bytes = &bytes[n..];
                    if *have == PREFACE.len() {
                        half.state = ReadState::Header;
                    }
                }
                ReadState::Header => {
                    let n = (HEADER_LEN - half.hdr_have).min(bytes.len());
                    half.hdr_buf[half.hdr_have..half.hdr_have + n].copy_from_slice(&bytes[..n]);
                    half.hdr_have += n;
                    bytes = &bytes[n..];
                    if half.hdr_have == HEADER_LEN {
                        half.hdr_have = 0;
                        let hdr = FrameHeader::parse(&half.hdr_buf);
                        self.stats.frames += 1;
                        self.begin_frame(i, hdr, frame, ts_ns, sink);
                    }
                }
                ReadState::Data {
                    hdr,
                    need_pad_len,
                    data_left,
                    pad_left,
                } => {
                    let hdr = *hdr;
                    if *need_pad_len {
                        let pad = usize::from(bytes[0]);
                        bytes = &bytes[1..];
                        *need_pad_len = false;
                        if pad > *data_left {
                            self.stats.frame_errors += 1;
                            *pad_left = *data_left;
                            *data_left = 0;
                        } else {
                            *data_left -= pad;
                            *pad_left = pad;
                        }
                        if *data_left == 0 && *pad_left == 0 {
                            half.state = ReadState::Header;
                            Self::end_data(hdr, dir, frame, ts_ns, sink);
                        }
                        continue;
                    }
                    if *data_left > 0 {
                        let n = (*data_left).min(bytes.len());
                        *data_left -= n;
                        let last = *data_left == 0 && *pad_left == 0;
                        sink(Event::Data {
                            stream: hdr.stream,
                            dir,
                            data: &bytes[..n],
                            end_stream: last && hdr.has(flags::END_STREAM),
                            frame,
                            ts_ns,
                        });
                        bytes = &bytes[n..];
                        if last {
                            half.state = ReadState::Header;
                        }
                        continue;
                    }
                    let n = (*pad_left).min(bytes.len());
                    *pad_left -= n;
                    bytes = &bytes[n..];
                    if *pad_left == 0 {
                        half.state = ReadState::Header;
                        Self::end_data(hdr, dir, frame, ts_ns, sink);
                    }
                }
                ReadState::Buffered { hdr } => {
                    let hdr = *hdr;
                    let want = hdr.len as usize - half.buf.len();
                    let n = want.min(bytes.len());
                    half.buf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if half.buf.len() == hdr.len as usize {
                        half.state = ReadState::Header;
                        let payload = std::mem::take(&mut self.halves[i].buf);
                        self.control_frame(i, hdr, &payload, frame, ts_ns, sink);
                        // Keep the allocation for the next frame.
                        let mut payload = payload;
                        payload.clear();
                        self.halves[i].buf = payload;
                    }
                }
                ReadState::Skip { left } => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        half.state = ReadState::Header;
                    }
                }
                ReadState::Unsynced => {
                    half.resync.extend_from_slice(bytes);
                    if half.resync.len() > RESYNC_WINDOW {
                        // Keep the newest bytes; the rest cannot start a frame we can use.
                        let drop = half.resync.len() - RESYNC_WINDOW / 2;
                        half.drop_resync(drop);
                        self.stats.bytes_unsynced += drop as u64;
                    }
                    match half.resync_scan.find(&half.resync, dir) {
                        Some(start) => {
                            self.stats.bytes_unsynced += start as u64;
                            self.stats.resyncs += 1;
                            let tail = half.resync.split_off(start);
                            half.resync.clear();
                            half.resync_scan.clear();
                            half.state = ReadState::Header;
                            half.hdr_have = 0;
                            self.data(dir, &tail, frame, ts_ns, sink);
                        }
                        None => {
                            // Bytes before every candidate can never start a
                            // frame; drop them once they are half the buffer
                            // (moving the rest on every packet would be quadratic).
                            let dead = half.resync_scan.first_live();
                            if dead > 0 && dead * 2 >= half.resync.len() {
                                half.drop_resync(dead);
                                self.stats.bytes_unsynced += dead as u64;
                            }
                        }
                    }
                    return;
                }
            }
        }
    }

    /// The capture lost `len` bytes of one direction.
    pub fn gap(&mut self, dir: Dir, len: u64, sink: &mut impl FnMut(Event<'_>)) {
        let half = &mut self.halves[dir.index()];
        if let ReadState::Data {
            hdr,
            need_pad_len: false,
            data_left,
            pad_left,
        } = &mut half.state
        {
            // Inside a DATA payload the frame boundaries are still known:
            // account the loss to the stream and keep decoding.
            let in_frame = (*data_left + *pad_left) as u64;
            if len <= in_frame {
                let lost_data = len.min(*data_left as u64);
                *data_left -= lost_data as usize;
                *pad_left -= (len - lost_data) as usize;
                let hdr = *hdr;
                if lost_data > 0 {
                    sink(Event::DataLost {
                        stream: hdr.stream,
                        dir,
                        len: lost_data,
                    });
                }
                if *data_left == 0 && *pad_left == 0 {
                    half.state = ReadState::Header;
                    if hdr.has(flags::END_STREAM) {
                        sink(Event::Data {
                            stream: hdr.stream,
                            dir,
                            data: &[],
                            end_stream: true,
                            frame: 0,
                            ts_ns: 0,
                        });
                    }
                }
                return;
            }
            if *data_left > 0 {
                sink(Event::DataLost {
                    stream: hdr.stream,
                    dir,
                    len: *data_left as u64,
                });
            }
        }
        if !matches!(half.state, ReadState::Unsynced) {
            self.stats.desyncs += 1;
        }
        half.state = ReadState::Unsynced;
        half.resync.clear();
        half.resync_scan.clear();
        half.pending = None;
        half.hdr_have = 0;
        half.buf.clear();
        // Header blocks may have been lost with their dynamic-table insertions.
        half.hpack.mark_state_lost();
        self.stats.bytes_unsynced += len;
        sink(Event::Desync { dir });
    }

    fn end_data(
        hdr: FrameHeader,
        dir: Dir,
        frame: u64,
        ts_ns: i64,
        sink: &mut impl FnMut(Event<'_>),
    ) {
        if hdr.has(flags::END_STREAM) {
            sink(Event::Data {
                stream: hdr.stream,
                dir,
                data: &[],
                end_stream: true,
                frame,
                ts_ns,
            });
        }
    }

    fn begin_frame(
        &mut self,
        i: usize,
        hdr: FrameHeader,
        frame: u64,
        ts_ns: i64,
        sink: &mut impl FnMut(Event<'_>),
    ) {
        let half = &mut self.halves[i];
        // A header block must continue with CONTINUATION frames only (RFC 9113 §6.10).
        if half.pending.is_some() && hdr.kind != FrameType::Continuation {
            self.stats.frame_errors += 1;
            half.pending = None;
        }
        let len = hdr.len as usize;
        if hdr.kind == FrameType::Data {
            self.stats.data_frames += 1;
            half.state = ReadState::Data {
                hdr,
                need_pad_len: hdr.has(flags::PADDED) && len > 0,
                data_left: if hdr.has(flags::PADDED) {
                    len.saturating_sub(1)
                } else {
                    len
                },
                pad_left: 0,
            };
            if len == 0 {
                half.state = ReadState::Header;
                Self::end_data(hdr, half.dir, frame, ts_ns, sink);
            } else if hdr.has(flags::PADDED) && len == 1 {
                // Only the pad-length byte: handled when it arrives.
            }
            return;
        }
        if len > self.limits.max_buffered_frame {
            self.stats.oversized_frames += 1;
            if matches!(
                hdr.kind,
                FrameType::Headers | FrameType::Continuation | FrameType::PushPromise
            ) {
                // The lost block may have changed the dynamic table.
                half.hpack.mark_state_lost();
            }
            half.state = ReadState::Skip { left: len };
            return;
        }
        if len == 0 {
            self.control_frame(i, hdr, &[], frame, ts_ns, sink);
            return;
        }
        half.buf.clear();
        half.state = ReadState::Buffered { hdr };
    }

    fn control_frame(
        &mut self,
        i: usize,
        hdr: FrameHeader,
        payload: &[u8],
        frame: u64,
        ts_ns: i64,
        sink: &mut impl FnMut(Event<'_>),
    ) {
        let dir = self.halves[i].dir;
        match hdr.kind {
            FrameType::Headers => match frame::headers_fragment(&hdr, payload) {
                Ok(fragment) => {
                    let end_stream = hdr.has(flags::END_STREAM);
                    if hdr.has(flags::END_HEADERS) {
                        // The usual whole block: decoded where it lies.
                        let at = (hdr.stream, end_stream, frame, ts_ns);
                        self.finish_block(i, at, Some(fragment), sink);
                    } else {
                        self.halves[i].pending = Some(PendingBlock {
                            stream: hdr.stream,
                            end_stream,
                            buf: fragment.to_vec(),
                            oversized: false,
                        });
                    }
                }
                Err(_) => {
                    self.stats.frame_errors += 1;
                    self.halves[i].hpack.mark_state_lost();
                }
            },
            FrameType::Continuation => {
                let max = self.limits.max_buffered_frame;
                let Some(mut block) = self.halves[i].pending.take() else {
                    // CONTINUATION without HEADERS: a lost frame or a broken peer.
                    self.stats.frame_errors += 1;
                    self.halves[i].hpack.mark_state_lost();
                    return;
                };
                if block.stream != hdr.stream {
                    self.stats.frame_errors += 1;
                    self.halves[i].hpack.mark_state_lost();
                    return;
                }
                if block.buf.len() + payload.len() > max {
                    block.oversized = true;
                    block.buf.clear();
                } else if !block.oversized {
                    block.buf.extend_from_slice(payload);
                }
                if hdr.has(flags::END_HEADERS) {
                    let at = (block.stream, block.end_stream, frame, ts_ns);
                    let buf = (!block.oversized).then_some(block.buf.as_slice());
                    self.finish_block(i, at, buf, sink);
                } else {
                    self.halves[i].pending = Some(block);
                }
            }
            FrameType::PushPromise => match frame::push_promise(&hdr, payload) {
                // gRPC never pushes; decode the block only to keep HPACK in step.
                Ok((_, fragment)) if hdr.has(flags::END_HEADERS) => {
                    if self.halves[i].hpack.decode(fragment).is_err() {
                        self.stats.hpack_errors += 1;
                    }
                }
                _ => {
                    self.halves[i].hpack.mark_state_lost();
                }
            },
            FrameType::RstStream => match frame::rst_stream_code(payload) {
                Ok(code) => sink(Event::Reset {
                    stream: hdr.stream,
                    dir,
                    code,
                    frame,
                    ts_ns,
                }),
                Err(_) => self.stats.frame_errors += 1,
            },
            FrameType::Settings => {
                if hdr.has(flags::ACK) {
                    return;
                }
                match frame::settings(payload) {
                    Ok(it) => {
                        for (id, value) in it {
                            if id == frame::settings::HEADER_TABLE_SIZE {
                                // This peer's limit binds the OTHER side's encoder,
                                // i.e. the decoder of the opposite direction.
                                let other = 1 - i;
                                self.halves[other]
                                    .hpack
                                    .set_max_table_size_limit(value as usize);
                            }
                        }
                    }
                    Err(_) => self.stats.frame_errors += 1,
                }
            }
            FrameType::GoAway => match frame::goaway(payload) {
                Ok(g) => sink(Event::GoAway {
                    dir,
                    last_stream: g.last_stream,
                    code: g.code,
                    debug: g.debug,
                    frame,
                    ts_ns,
                }),
                Err(_) => self.stats.frame_errors += 1,
            },
            FrameType::Priority
            | FrameType::Ping
            | FrameType::WindowUpdate
            | FrameType::Unknown(_)
            | FrameType::Data => {}
        }
    }

    /// Decodes a whole header block; `block` is None when it outgrew the
    /// buffer limit. `at`: (stream, END_STREAM, frame, timestamp).
    fn finish_block(
        &mut self,
        i: usize,
        at: (u32, bool, u64, i64),
        block: Option<&[u8]>,
        sink: &mut impl FnMut(Event<'_>),
    ) {
        let (stream, end_stream, frame, ts_ns) = at;
        self.stats.header_blocks += 1;
        let half = &mut self.halves[i];
        let dir = half.dir;
        let error = match block {
            None => {
                half.hpack.mark_state_lost();
                self.fields.clear();
                Some("header block larger than the buffer limit".to_string())
            }
            Some(block) => match half.hpack.decode_into(block, &mut self.fields) {
                Ok(()) => None,
                Err(e) => {
                    // The decoder itself forgets state after a malformed block
                    // and keeps it after a limit error (the table stays valid).
                    self.stats.hpack_errors += 1;
                    self.fields.clear();
                    Some(format!("HPACK: {e}"))
                }
            },
        };
        sink(Event::Headers {
            stream,
            dir,
            fields: &self.fields,
            end_stream,
            error,
            frame,
            ts_ns,
        });
    }
}

/// Whether `bytes` starts like the client preface (enough to route a connection).
pub fn looks_like_preface(bytes: &[u8]) -> bool {
    let n = bytes.len().min(PREFACE.len());
    n >= 4 && bytes[..n] == PREFACE[..n]
}

/// The full rescan `ChainScan` stands in for: whether a chain starts anywhere.
#[cfg(test)]
pub(crate) fn looks_like_frames(bytes: &[u8], dir: Dir) -> bool {
    (0..bytes.len()).any(|s| chain_found_at(bytes, s, dir))
}

#[cfg(test)]
pub(crate) fn chain_found_at(bytes: &[u8], start: usize, dir: Dir) -> bool {
    chain_at(bytes, start, dir) == Chain::Found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// SETTINGS, PING, WINDOW_UPDATE: a chain found once the third header is in.
    fn chain() -> Vec<u8> {
        let mut b = Vec::new();
        frame(&mut b, 4, 0, 0, &[]);
        frame(&mut b, 6, 0, 0, &[0; 8]);
        frame(&mut b, 8, 0, 0, &[0, 0, 1, 0]);
        b
    }

    /// A plausible HEADERS header claiming 1 MiB: waits far beyond the test bytes.
    fn long_header() -> [u8; HEADER_LEN] {
        [0x10, 0, 0, 1, 4, 0, 0, 0, 1]
    }

    #[test]
    fn shifted_scan_finds_the_chain_at_the_shifted_offset() {
        let mut b = vec![0xee; 10];
        b.extend_from_slice(&long_header());
        b.extend_from_slice(&[0xee; 5]);
        let real = b.len();
        b.extend_from_slice(&chain());
        let mut scan = ChainScan::default();
        // Up to the middle of the chain: the long header and the chain wait.
        let cut = real + 12;
        assert_eq!(scan.find(&b[..cut], Dir::ToServer), None);
        assert_eq!(scan.first_live(), 10);
        // The resync drops the dead bytes in front.
        b.drain(..10);
        scan.shift(10);
        assert_eq!(scan.first_live(), 0);
        assert_eq!(scan.find(&b[..cut - 10], Dir::ToServer), None);
        // Dropping the long header's bytes forgets it.
        b.drain(..3);
        scan.shift(3);
        assert_eq!(scan.find(&b, Dir::ToServer), Some(real - 13));
        assert_eq!(scan.waiting(), 1, "only the chain kept waiting");
    }

    #[test]
    fn shift_past_the_scanned_offsets_starts_over() {
        let mut scan = ChainScan::default();
        let junk = [0xee; 40];
        assert_eq!(scan.find(&junk, Dir::ToServer), None);
        scan.shift(40);
        assert_eq!((scan.first_live(), scan.waiting()), (0, 0));
        assert_eq!(scan.find(&chain(), Dir::ToServer), Some(0));
    }

    /// More long-waiting headers than the cap, then a chain cut into pieces:
    /// the waiting starts stay bounded and the chain is still found.
    #[test]
    fn chain_found_behind_more_waiting_starts_than_the_cap() {
        let mut b = Vec::new();
        for _ in 0..4 * MAX_WAITING {
            b.extend_from_slice(&long_header());
        }
        let real = b.len();
        b.extend_from_slice(&chain());
        let mut scan = ChainScan::default();
        let mut found = None;
        for len in 1..=b.len() {
            found = scan.find(&b[..len], Dir::ToServer);
            assert!(scan.waiting() <= MAX_WAITING);
            if found.is_some() {
                break;
            }
        }
        assert_eq!(found, Some(real));
    }

    /// A chain found at the very end of the bytes is checked again when asked
    /// again, as the full rescan would.
    #[test]
    fn chain_ending_at_the_end_is_checked_again() {
        let mut b = Vec::new();
        frame(&mut b, 4, 0, 0, &[]);
        frame(&mut b, 6, 0, 0, &[0; 8]);
        let mut scan = ChainScan::default();
        assert_eq!(scan.find(&b, Dir::ToServer), Some(0));
        b.extend_from_slice(&[0xee; HEADER_LEN]);
        assert!(!looks_like_frames(&b, Dir::ToServer));
        assert_eq!(scan.find(&b, Dir::ToServer), None);
    }

    /// Frames among junk, delivered in random pieces, the dead bytes in
    /// front dropped now and then (sometimes more, as the resync window
    /// does): the scan finds the earliest start a rescan of what is left
    /// finds, at the same delivery (these bytes never fill it).
    #[test]
    fn scan_with_shifts_finds_what_a_rescan_finds() {
        let mut next = crate::test_rng(0x0123_4567_89ab_cdef);
        let mut found = 0;
        for round in 0..2000 {
            let mut bytes = Vec::new();
            while bytes.len() < 1 + next(600) as usize {
                match next(5) {
                    0 => frame(&mut bytes, 4, 0, 0, &[0; 6][..6 * next(2) as usize]),
                    1 => frame(&mut bytes, 6, 0, 0, &[9; 8]),
                    2 => frame(&mut bytes, 0, 1, 1 + 2 * next(3) as u32, &[0xff; 20]),
                    // A header claiming more than follows.
                    3 => frame(&mut bytes, 1, 4, 1, &[]),
                    _ => bytes.extend((0..next(30)).map(|_| [0, 1, 4, 0xff][next(4) as usize])),
                }
                // Now and then a byte of a header or payload broken.
                if !bytes.is_empty() && next(3) == 0 {
                    let at = bytes.len() - 4.min(bytes.len());
                    bytes[at] = next(3) as u8;
                }
            }
            let mut scan = ChainScan::default();
            let (mut buf, mut fed) = (Vec::new(), 0);
            while fed < bytes.len() {
                let n = (1 + next(40) as usize).min(bytes.len() - fed);
                buf.extend_from_slice(&bytes[fed..fed + n]);
                fed += n;
                let got = scan.find(&buf, Dir::ToServer);
                // Fewer wait than the cap in these bytes: none was dropped.
                assert!(scan.waiting() < MAX_WAITING, "round {round}");
                let want = (0..buf.len()).find(|&s| chain_found_at(&buf, s, Dir::ToServer));
                if let Some(s) = got {
                    assert!(chain_found_at(&buf, s, Dir::ToServer), "round {round}");
                }
                assert_eq!(got, want, "round {round} at {fed}");
                if got.is_some() {
                    found += 1;
                    break;
                }
                let dead = if next(8) == 0 {
                    next(buf.len() as u64 + 1) as usize
                } else {
                    scan.first_live()
                };
                if next(2) == 0 {
                    buf.drain(..dead);
                    scan.shift(dead);
                }
            }
        }
        assert!(found > 500, "{found}");
    }
}
