//! Per-direction TCP stream reassembly for passive capture decoding.
//!
//! One [`Reassembler`] per direction of a connection turns captured segments (in capture order,
//! possibly lost, duplicated, reordered or overlapping) into an ordered series of [`Delivery`]
//! events: contiguous data, explicit gaps, and the end of the stream.
//!
//! Policies, chosen because every input is attacker-controlled:
//! - The first copy of any byte wins. Later copies are only compared (differences are counted in
//!   [`Stats::overlap_conflicts`]), so a late, injected segment cannot rewrite what was seen.
//! - In-order data goes to the sink straight from the caller's payload. Only out-of-order data is
//!   copied, into a `BTreeMap` of non-overlapping pieces keyed by stream offset.
//! - Memory is bounded by [`Limits`]. When the limits are exceeded, the earliest hole is declared lost.
//! - A segment costs O(payload + log n + pieces it overlaps). Every piece holds at least one byte,
//!   so it can overlap at most `len + 1` pieces, and no pattern of segments is quadratic.
//! - A SYN that arrives after the stream ended (a new connection on the same 4-tuple, with a new ISN)
//!   is ignored here. The caller should detect it (compare with [`Reassembler::isn`]) and start a
//!   fresh `Reassembler`.

use std::collections::BTreeMap;

/// The largest plausible distance, either way, between a segment and the next expected byte. The
/// TCP window cannot exceed 2^30 bytes (RFC 7323), so anything further away is junk or belongs to
/// another connection. Buffering it would only let an attacker fake huge gaps.
const MAX_SEQ_DISTANCE: i64 = 1 << 30;

/// What the reassembler hands to the next stage, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// Contiguous bytes, starting at stream offset `offset` (0 = first byte after SYN, or first byte seen
    /// when the connection was picked up mid-stream). `frame` is the capture frame number (1-based,
    /// as Wireshark counts) of the packet that carried these bytes. `ts_ns` its timestamp.
    Data {
        offset: u64,
        bytes: &'a [u8],
        frame: u64,
        ts_ns: i64,
    },
    /// Bytes [offset, offset+len) were never seen and never will be: an explicit gap.
    Gap { offset: u64, len: u64 },
    /// The stream ended (FIN reached in order, or RST).
    End { reset: bool },
}

/// Receives deliveries. Closures taking a `Delivery<'_>` implement it.
pub trait Sink {
    fn deliver(&mut self, d: Delivery<'_>);
}

impl<F: FnMut(Delivery<'_>)> Sink for F {
    fn deliver(&mut self, d: Delivery<'_>) {
        self(d)
    }
}

/// Per-direction resource bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Out-of-order bytes held per direction (e.g. 4 MiB). A single segment can exceed this for
    /// the duration of one call, because it is inserted before the limit is enforced.
    pub max_buffered_bytes: usize,
    /// Out-of-order pieces held per direction (e.g. 4096). This bounds the per-piece overhead
    /// when an attacker sends tiny segments.
    pub max_segments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_buffered_bytes: 4 << 20,
            max_segments: 4096,
        }
    }
}

/// Counters, all per direction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Calls to [`Reassembler::segment`], pure ACKs included.
    pub segments: u64,
    pub bytes_delivered: u64,
    /// Payload bytes that duplicated bytes already delivered or buffered, or that arrived after End.
    pub retransmitted_bytes: u64,
    /// Overlapping bytes that differed from the first copy.
    pub overlap_conflicts: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    pub out_of_order_segments: u64,
    /// Bytes before the stream start (before the SYN, or before the pickup point).
    pub dropped_before_start: u64,
    /// Times a hole was declared lost because out-of-order data exceeded [`Limits`].
    pub buffer_limit_hits: u64,
    /// Segments discarded wholly or partly as implausible: more than 1 GiB out of window, data
    /// beyond the FIN, or a FIN that contradicts an earlier FIN or already-delivered data.
    pub junk_segments: u64,
    /// Payload bytes discarded as junk. RST payloads are counted here: they are diagnostics, not stream data.
    pub junk_bytes: u64,
}

/// A buffered out-of-order piece. Pieces never overlap each other.
#[derive(Debug)]
struct Piece {
    data: Vec<u8>,
    frame: u64,
    ts_ns: i64,
}

/// Reassembles one direction of one TCP connection.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    stats: Stats,
    /// The raw sequence number of stream offset 0. `None` until the first segment that carries data or a flag.
    base_seq: Option<u32>,
    isn: Option<u32>,
    /// The next expected stream offset. Everything before it was delivered or declared lost.
    next_off: u64,
    /// The stream offset at which the FIN sits (the end of the data).
    fin_off: Option<u64>,
    ended: bool,
    /// Invariant: every key is > `next_off` (anything at `next_off` is drained at once), and every
    /// piece ends at or before `fin_off`.
    buf: BTreeMap<u64, Piece>,
    buffered: usize,
    /// Reused list of holes to fill while buffering, so the BTreeMap is walked only once.
    scratch: Vec<(u64, u64)>,
    /// The peer acknowledged up to this offset, beyond what we have, and how
    /// many ACKs have said so. Captures taken on multi-queue NICs can show an
    /// ACK before the data it acknowledges, so a hole is declared lost only
    /// after `ACK_GRACE` acknowledgements (or at flush), not on the first one.
    pending_ack: Option<(u64, u32)>,
}

/// ACKs past a hole before the hole is declared lost.
const ACK_GRACE: u32 = 4;

impl Reassembler {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            stats: Stats::default(),
            base_seq: None,
            isn: None,
            next_off: 0,
            fin_off: None,
            ended: false,
            buf: BTreeMap::new(),
            buffered: 0,
            scratch: Vec::new(),
            pending_ack: None,
        }
    }

    /// One TCP segment of this direction. `seq` is the raw 32-bit sequence number, `syn`/`fin`/`rst` the flags.
    /// In-order data is delivered straight from `payload` without copying (the common fast path);
    /// only out-of-order data is copied into the buffer. Nothing is allocated on the in-order fast path.
    #[allow(clippy::too_many_arguments)] // mirrors the header fields the caller already has at hand
    pub fn segment(
        &mut self,
        seq: u32,
        payload: &[u8],
        syn: bool,
        fin: bool,
        rst: bool,
        frame: u64,
        ts_ns: i64,
        sink: &mut impl Sink,
    ) {
        self.stats.segments += 1;
        if self.ended {
            self.stats.retransmitted_bytes += payload.len() as u64;
            return;
        }
        // Pure ACKs never start the stream: their seq may be a keep-alive probe (snd.nxt - 1).
        if payload.is_empty() && !(syn || fin || rst) {
            return;
        }
        // A SYN occupies one sequence number, so its data (TFO) starts after it.
        let data_seq = if syn { seq.wrapping_add(1) } else { seq };
        let base = match self.base_seq {
            Some(base) => base,
            None => {
                if syn {
                    self.isn = Some(seq);
                }
                self.base_seq = Some(data_seq);
                data_seq
            }
        };
        // Serial-number arithmetic: the signed 32-bit distance from the next expected byte.
        let rel = i64::from(data_seq.wrapping_sub(self.next_seq(base)) as i32);
        // Use i128, so segments that reach before offset 0 need no special handling.
        let start = i128::from(self.next_off) + i128::from(rel);
        let end = start + payload.len() as i128;
        if rel.abs() > MAX_SEQ_DISTANCE || end > i128::from(u64::MAX) {
            self.junk(payload.len());
            return;
        }
        if rst {
            self.stats.junk_bytes += payload.len() as u64;
            self.reset(sink);
            return;
        }
        if fin {
            self.note_fin(end);
        }
        self.accept(start, payload, frame, ts_ns, sink);
        self.maybe_end(sink);
    }

    /// The peer acknowledged up to `ack` (raw 32-bit) in this direction. Bytes that were acknowledged but never
    /// seen (capture loss: "ACKed unseen segment") are lost. Gaps are declared for every hole before `ack`,
    /// and the buffered data between them is delivered. This goes beyond "gap up to the first buffered
    /// piece", because the peer has confirmed that every hole before `ack` existed.
    pub fn ack(&mut self, ack: u32, sink: &mut impl Sink) {
        let Some(base) = self.base_seq else { return };
        if self.ended {
            return;
        }
        if self.pending_ack.is_some_and(|(t, _)| t <= self.next_off) {
            // The data arrived after its ACK: no loss after all.
            self.pending_ack = None;
        }
        let rel = i64::from(ack.wrapping_sub(self.next_seq(base)) as i32);
        if rel <= 0 || rel > MAX_SEQ_DISTANCE {
            return;
        }
        let mut target = self.next_off.saturating_add(rel as u64);
        // The ACK also covers the FIN's own sequence number, which carries no data.
        if let Some(fin) = self.fin_off {
            target = target.min(fin);
        }
        let (target, seen) = match self.pending_ack {
            Some((t, n)) => (t.max(target), n + 1),
            None => (target, 1),
        };
        if seen < ACK_GRACE {
            self.pending_ack = Some((target, seen));
            return;
        }
        self.pending_ack = None;
        self.gap_until(target, sink);
    }

    /// Declares everything before `target` that is not buffered lost.
    fn gap_until(&mut self, target: u64, sink: &mut impl Sink) {
        while self.next_off < target {
            let upto = self.buf.keys().next().map_or(target, |&k| k.min(target));
            self.emit_gap(upto, sink);
            self.drain(sink);
        }
        self.maybe_end(sink);
    }

    /// End of capture or connection expiry: declare gaps for holes, flush every buffered piece in order,
    /// then emit End{reset:false} if a FIN was seen (a hole just before the FIN becomes a gap). Without a FIN,
    /// no End is emitted: the caller marks the flow incomplete.
    pub fn flush(&mut self, sink: &mut impl Sink) {
        if self.ended {
            return;
        }
        if let Some((target, _)) = self.pending_ack.take() {
            self.gap_until(target, sink);
        }
        self.flush_buffer(sink);
        if let Some(fin) = self.fin_off {
            self.emit_gap(fin, sink);
            self.maybe_end(sink);
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The next expected stream offset (bytes delivered or declared lost so far).
    pub fn offset(&self) -> u64 {
        self.next_off
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// The number of out-of-order pieces currently held.
    pub fn buffered_segments(&self) -> usize {
        self.buf.len()
    }

    /// The ISN, if the stream was started by a SYN (`None` when picked up mid-stream).
    pub fn isn(&self) -> Option<u32> {
        self.isn
    }

    fn next_seq(&self, base: u32) -> u32 {
        // Truncating is intended: sequence numbers are the offset mod 2^32.
        base.wrapping_add(self.next_off as u32)
    }

    fn junk(&mut self, bytes: usize) {
        self.stats.junk_segments += 1;
        self.stats.junk_bytes += bytes as u64;
    }

    /// Records a FIN whose data ends at stream offset `end`.
    fn note_fin(&mut self, end: i128) {
        match self.fin_off {
            Some(fin) if i128::from(fin) == end => {}
            // Keep the first FIN, just as the first copy of data is kept.
            Some(_) => self.stats.junk_segments += 1,
            None => match u64::try_from(end) {
                Ok(fin) if fin >= self.next_off => {
                    self.fin_off = Some(fin);
                    self.trim_buffer(fin);
                }
                // A FIN before bytes already delivered cannot be genuine.
                _ => self.stats.junk_segments += 1,
            },
        }
    }

    /// Discards buffered data at or beyond the FIN.
    fn trim_buffer(&mut self, fin: u64) {
        let beyond = self.buf.split_off(&fin);
        for piece in beyond.values() {
            self.buffered -= piece.data.len();
            self.junk(piece.data.len());
        }
        if let Some(mut last) = self.buf.last_entry() {
            let keep = usize::try_from(fin.saturating_sub(*last.key())).unwrap_or(usize::MAX);
            let piece = last.get_mut();
            if piece.data.len() > keep {
                let cut = piece.data.len() - keep;
                piece.data.truncate(keep);
                self.buffered -= cut;
                self.stats.junk_segments += 1;
                self.stats.junk_bytes += cut as u64;
            }
        }
    }

    /// Handles a data payload that starts at stream offset `start`, which may lie before 0 or `next_off`.
    fn accept(
        &mut self,
        mut start: i128,
        mut payload: &[u8],
        frame: u64,
        ts_ns: i64,
        sink: &mut impl Sink,
    ) {
        let len = |p: &[u8]| p.len() as i128;
        if let Some(fin) = self.fin_off {
            let keep = (i128::from(fin) - start).clamp(0, len(payload)) as usize;
            if keep < payload.len() {
                self.junk(payload.len() - keep);
                payload = &payload[..keep];
            }
        }
        let before_start = (-start).clamp(0, len(payload)) as usize;
        self.stats.dropped_before_start += before_start as u64;
        payload = &payload[before_start..];
        start += before_start as i128;
        let seen = (i128::from(self.next_off) - start).clamp(0, len(payload)) as usize;
        self.stats.retransmitted_bytes += seen as u64;
        payload = &payload[seen..];
        start += seen as i128;
        if payload.is_empty() {
            return;
        }
        // Here start >= next_off >= 0, and the caller checked that start + len fits in a u64.
        let start = start as u64;
        if start == self.next_off {
            self.deliver_in_order(payload, frame, ts_ns, sink);
        } else {
            self.stats.out_of_order_segments += 1;
            self.buffer(start, payload, frame, ts_ns);
            self.enforce_limits(sink);
        }
    }

    /// Delivers `payload`, which starts at `next_off`, then any buffered pieces that became contiguous.
    fn deliver_in_order(
        &mut self,
        mut payload: &[u8],
        frame: u64,
        ts_ns: i64,
        sink: &mut impl Sink,
    ) {
        while !payload.is_empty() {
            match self.buf.first_key_value().map(|(&k, _)| k) {
                // Buffered bytes were seen first, so they win wherever this segment overlaps them.
                Some(k) if k <= self.next_off => {
                    let Some((k, piece)) = self.pop_first() else {
                        break;
                    };
                    let data = piece.data.get(self.skip(k)..).unwrap_or(&[]);
                    let n = data.len().min(payload.len());
                    note_overlap(&mut self.stats, &data[..n], &payload[..n]);
                    payload = &payload[n..];
                    self.emit_data(data, piece.frame, piece.ts_ns, sink);
                }
                Some(k) => {
                    let n = usize::try_from(k - self.next_off)
                        .map_or(payload.len(), |n| n.min(payload.len()));
                    let (now, rest) = payload.split_at(n);
                    self.emit_data(now, frame, ts_ns, sink);
                    payload = rest;
                }
                None => {
                    self.emit_data(payload, frame, ts_ns, sink);
                    payload = &[];
                }
            }
        }
        self.drain(sink);
    }

    /// Copies the parts of `payload` (at stream offset `start` > `next_off`) that fill holes between
    /// buffered pieces. Parts that overlap existing pieces are only compared: the first copy wins.
    fn buffer(&mut self, start: u64, payload: &[u8], frame: u64, ts_ns: i64) {
        let end = start + payload.len() as u64;
        let mut holes = std::mem::take(&mut self.scratch);
        holes.clear();
        let (mut dup, mut diff) = (0u64, 0u64);
        let mut cur = start;
        // Start the scan at the piece at or before `start`, because it may cover our head.
        let from = self
            .buf
            .range(..=start)
            .next_back()
            .map_or(start, |(&k, _)| k);
        for (&k, piece) in self.buf.range(from..end) {
            let piece_end = k + piece.data.len() as u64;
            if piece_end <= cur {
                continue;
            }
            if k > cur {
                holes.push((cur, k));
            }
            let (a, b) = (k.max(cur), piece_end.min(end));
            let old = &piece.data[(a - k) as usize..(b - k) as usize];
            let new = &payload[(a - start) as usize..(b - start) as usize];
            dup += old.len() as u64;
            diff += differing(old, new);
            cur = b;
        }
        if cur < end {
            holes.push((cur, end));
        }
        self.stats.retransmitted_bytes += dup;
        self.stats.overlap_conflicts += diff;
        for &(a, b) in &holes {
            let data = payload[(a - start) as usize..(b - start) as usize].to_vec();
            self.buffered += data.len();
            self.buf.insert(a, Piece { data, frame, ts_ns });
        }
        self.scratch = holes;
    }

    /// While over the limits, gives up on the earliest hole and delivers what follows it.
    fn enforce_limits(&mut self, sink: &mut impl Sink) {
        while self.buffered > self.limits.max_buffered_bytes
            || self.buf.len() > self.limits.max_segments
        {
            let Some(&first) = self.buf.keys().next() else {
                break;
            };
            self.stats.buffer_limit_hits += 1;
            self.emit_gap(first, sink);
            self.drain(sink);
        }
    }

    /// Delivers every buffered piece in order, declaring the holes between them as gaps. No gap is
    /// declared past the last buffered byte.
    fn flush_buffer(&mut self, sink: &mut impl Sink) {
        while let Some(&first) = self.buf.keys().next() {
            self.emit_gap(first, sink);
            self.drain(sink);
        }
    }

    /// Delivers buffered pieces while they are contiguous with `next_off`.
    fn drain(&mut self, sink: &mut impl Sink) {
        while self
            .buf
            .first_key_value()
            .is_some_and(|(&k, _)| k <= self.next_off)
        {
            let Some((k, piece)) = self.pop_first() else {
                break;
            };
            let data = piece.data.get(self.skip(k)..).unwrap_or(&[]);
            self.emit_data(data, piece.frame, piece.ts_ns, sink);
        }
    }

    fn pop_first(&mut self) -> Option<(u64, Piece)> {
        let (k, piece) = self.buf.pop_first()?;
        self.buffered -= piece.data.len();
        Some((k, piece))
    }

    /// How many leading bytes of a piece at `k` were already covered. This is always 0 while the
    /// invariants hold; computing it keeps a broken invariant from turning into a panic.
    fn skip(&self, k: u64) -> usize {
        usize::try_from(self.next_off.saturating_sub(k)).unwrap_or(usize::MAX)
    }

    fn emit_data(&mut self, bytes: &[u8], frame: u64, ts_ns: i64, sink: &mut impl Sink) {
        if bytes.is_empty() {
            return;
        }
        sink.deliver(Delivery::Data {
            offset: self.next_off,
            bytes,
            frame,
            ts_ns,
        });
        self.next_off += bytes.len() as u64;
        self.stats.bytes_delivered += bytes.len() as u64;
    }

    /// Declares [next_off, upto) lost.
    fn emit_gap(&mut self, upto: u64, sink: &mut impl Sink) {
        if upto <= self.next_off {
            return;
        }
        let len = upto - self.next_off;
        sink.deliver(Delivery::Gap {
            offset: self.next_off,
            len,
        });
        self.stats.gaps += 1;
        self.stats.gap_bytes += len;
        self.next_off = upto;
    }

    fn maybe_end(&mut self, sink: &mut impl Sink) {
        if !self.ended && self.fin_off.is_some_and(|fin| self.next_off >= fin) {
            self.finish(false, sink);
        }
    }

    /// RST: deliver what we have, with holes between the buffered pieces as gaps, then End.
    fn reset(&mut self, sink: &mut impl Sink) {
        self.flush_buffer(sink);
        self.finish(true, sink);
    }

    fn finish(&mut self, reset: bool, sink: &mut impl Sink) {
        self.ended = true;
        self.buf.clear();
        self.buffered = 0;
        self.scratch = Vec::new();
        sink.deliver(Delivery::End { reset });
    }
}

fn differing(a: &[u8], b: &[u8]) -> u64 {
    a.iter().zip(b).filter(|(x, y)| x != y).count() as u64
}

fn note_overlap(stats: &mut Stats, first: &[u8], later: &[u8]) {
    stats.retransmitted_bytes += first.len() as u64;
    stats.overlap_conflicts += differing(first, later);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Data {
            off: u64,
            bytes: Vec<u8>,
            frame: u64,
        },
        Gap(u64, u64),
        End(bool),
    }

    /// Records deliveries. It also checks that every Data carries the timestamp of its own frame.
    #[derive(Default)]
    struct Rec(Vec<Ev>);

    impl Sink for Rec {
        fn deliver(&mut self, d: Delivery<'_>) {
            self.0.push(match d {
                Delivery::Data {
                    offset,
                    bytes,
                    frame,
                    ts_ns,
                } => {
                    assert_eq!(
                        ts_ns,
                        ts_of(frame),
                        "timestamp must come from frame {frame}"
                    );
                    Ev::Data {
                        off: offset,
                        bytes: bytes.to_vec(),
                        frame,
                    }
                }
                Delivery::Gap { offset, len } => Ev::Gap(offset, len),
                Delivery::End { reset } => Ev::End(reset),
            });
        }
    }

    fn ts_of(frame: u64) -> i64 {
        frame as i64 * 1_000 + 7
    }

    const SYN: u8 = 1;
    const FIN: u8 = 2;
    const RST: u8 = 4;

    struct T {
        r: Reassembler,
        out: Rec,
        frame: u64,
    }

    impl T {
        fn new() -> Self {
            Self::with(Limits::default())
        }
        fn with(limits: Limits) -> Self {
            Self {
                r: Reassembler::new(limits),
                out: Rec::default(),
                frame: 0,
            }
        }
        /// Feeds a segment as the next capture frame and returns its frame number.
        fn send(&mut self, seq: u32, data: &[u8], flags: u8) -> u64 {
            self.frame += 1;
            let f = self.frame;
            self.r.segment(
                seq,
                data,
                flags & SYN != 0,
                flags & FIN != 0,
                flags & RST != 0,
                f,
                ts_of(f),
                &mut self.out,
            );
            f
        }
        fn ack(&mut self, ack: u32) {
            self.r.ack(ack, &mut self.out);
        }
        fn flush(&mut self) {
            self.r.flush(&mut self.out);
        }
        fn take(&mut self) -> Vec<Ev> {
            std::mem::take(&mut self.out.0)
        }
    }

    fn d(off: u64, bytes: &[u8], frame: u64) -> Ev {
        Ev::Data {
            off,
            bytes: bytes.to_vec(),
            frame,
        }
    }

    #[test]
    fn in_order() {
        let mut t = T::new();
        t.send(1000, b"", SYN);
        t.send(1001, b"hello ", 0);
        t.send(1007, b"world", 0);
        t.send(1012, b"", FIN);
        assert_eq!(
            t.take(),
            vec![d(0, b"hello ", 2), d(6, b"world", 3), Ev::End(false)]
        );
        assert!(t.r.is_ended());
        assert_eq!(t.r.offset(), 11);
        assert_eq!(t.r.isn(), Some(1000));
        let s = t.r.stats();
        assert_eq!((s.segments, s.bytes_delivered), (4, 11));
        assert_eq!(
            (s.out_of_order_segments, s.retransmitted_bytes, s.gaps),
            (0, 0, 0)
        );
    }

    #[test]
    fn out_of_order_reversed() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(9, b"ccc", 0);
        t.send(5, b"bbbb", 0);
        assert!(t.take().is_empty());
        assert_eq!(t.r.buffered_bytes(), 7);
        t.send(1, b"aaaa", 0);
        assert_eq!(
            t.take(),
            vec![d(0, b"aaaa", 4), d(4, b"bbbb", 3), d(8, b"ccc", 2)]
        );
        assert_eq!(t.r.buffered_bytes(), 0);
        assert_eq!(t.r.stats().out_of_order_segments, 2);
    }

    #[test]
    fn retransmission_dropped() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1, b"abcd", 0);
        t.send(1, b"abcd", 0);
        t.send(0, b"", SYN); // retransmitted SYN
        assert_eq!(t.take(), vec![d(0, b"abcd", 2)]);
        assert_eq!(t.r.stats().retransmitted_bytes, 4);
        assert_eq!(t.r.offset(), 4);
    }

    #[test]
    fn overlap_conflict_keeps_first_copy() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(11, b"KLMNO", 0); // [10,15)
        t.send(6, b"fghijXXXXX", 0); // [5,15): its tail conflicts
        assert_eq!(t.r.stats().overlap_conflicts, 5);
        assert_eq!(t.r.buffered_bytes(), 10);
        t.send(1, b"abcde", 0);
        assert_eq!(
            t.take(),
            vec![d(0, b"abcde", 4), d(5, b"fghij", 3), d(10, b"KLMNO", 2)]
        );
        // An in-order segment that overlaps a buffered piece: the buffered (first) copy still wins.
        t.send(21, b"uvwxy", 0); // [20,25)
        t.send(16, b"pqrstuVWxy", 0); // [15,25): 2 bytes conflict
        assert_eq!(t.take(), vec![d(15, b"pqrst", 6), d(20, b"uvwxy", 5)]);
        assert_eq!(t.r.stats().overlap_conflicts, 7);
        assert_eq!(t.r.stats().retransmitted_bytes, 10);
    }

    #[test]
    fn partial_overlap_with_delivered() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1, b"0123456789", 0);
        t.send(6, b"56789abcde", 0);
        assert_eq!(t.take(), vec![d(0, b"0123456789", 2), d(10, b"abcde", 3)]);
        assert_eq!(t.r.stats().retransmitted_bytes, 5);
    }

    #[test]
    fn sequence_wraparound() {
        let isn = u32::MAX - 4; // 2^32 - 5
        let mut t = T::new();
        t.send(isn, b"", SYN);
        t.send(4, b"ijkl", 0);
        t.send(0, b"efgh", 0);
        t.send(isn.wrapping_add(1), b"abcd", 0);
        t.send(8, b"", FIN);
        assert_eq!(
            t.take(),
            vec![
                d(0, b"abcd", 4),
                d(4, b"efgh", 3),
                d(8, b"ijkl", 2),
                Ev::End(false)
            ]
        );
        assert_eq!(t.r.isn(), Some(isn));
    }

    #[test]
    fn offsets_beyond_4gib() {
        let mut t = T::new();
        t.send(10, b"x", 0);
        let mut next = 11u32;
        for _ in 0..5 {
            next = next.wrapping_add(1 << 30);
            for _ in 0..ACK_GRACE {
                t.ack(next);
            }
        }
        t.send(next, b"late", 0);
        let ev = t.take();
        assert_eq!(ev.len(), 7);
        assert_eq!(ev[6], d(1 + (5 << 30), b"late", 2));
        assert_eq!(t.r.stats().gap_bytes, 5 << 30);
    }

    #[test]
    fn mid_connection_pickup() {
        let mut t = T::new();
        t.send(5_000_000, b"hello", 0);
        t.send(4_999_990, b"0123456789helloworld", 0);
        assert_eq!(t.take(), vec![d(0, b"hello", 1), d(5, b"world", 2)]);
        let s = t.r.stats();
        assert_eq!((s.dropped_before_start, s.retransmitted_bytes), (10, 5));
        assert_eq!(t.r.isn(), None);
    }

    #[test]
    fn pure_ack_does_not_start_stream() {
        let mut t = T::new();
        t.send(500, b"", 0);
        t.ack(12345);
        t.send(1000, b"abc", 0);
        t.send(1003, b"", 0);
        assert_eq!(t.take(), vec![d(0, b"abc", 2)]);
        assert_eq!(t.r.stats().segments, 3);
    }

    #[test]
    fn syn_with_data() {
        let mut t = T::new();
        t.send(100, b"tfo", SYN);
        t.send(104, b"!", 0);
        t.send(100, b"tfo", SYN); // retransmitted SYN+data
        assert_eq!(t.take(), vec![d(0, b"tfo", 1), d(3, b"!", 2)]);
        assert_eq!(t.r.stats().retransmitted_bytes, 3);
    }

    #[test]
    fn fin_out_of_order() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(21, b"zz", 0); // beyond the FIN that comes next: trimmed once the FIN is known
        t.send(6, b"world", FIN); // [5,10), FIN at 10
        assert_eq!(t.r.buffered_bytes(), 5);
        t.send(9, b"ldJUNK", 0); // [8,14): "ld" duplicates, 4 bytes beyond the FIN
        assert!(t.take().is_empty());
        t.send(1, b"hello", 0);
        assert_eq!(
            t.take(),
            vec![d(0, b"hello", 5), d(5, b"world", 3), Ev::End(false)]
        );
        assert_eq!(t.r.stats().junk_bytes, 6);
        assert_eq!(t.r.stats().junk_segments, 2);
    }

    #[test]
    fn rst_flushes_then_ends() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1, b"aaaa", 0);
        t.send(9, b"cccc", 0); // [8,12)
        t.send(30, b"", RST);
        assert_eq!(
            t.take(),
            vec![
                d(0, b"aaaa", 2),
                Ev::Gap(4, 4),
                d(8, b"cccc", 3),
                Ev::End(true)
            ]
        );
        t.send(5, b"bbbb", 0);
        t.flush();
        t.ack(100);
        assert!(t.take().is_empty());
        assert!(t.r.is_ended());
        assert_eq!(t.r.stats().retransmitted_bytes, 4);
    }

    #[test]
    fn ack_declares_gap() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1, b"aaaa", 0);
        t.send(9, b"cccc", 0); // [8,12)
        t.take();
        t.ack(1); // acks nothing new
        for _ in 1..ACK_GRACE {
            t.ack(7); // acks up to offset 6, not yet trusted
        }
        assert!(t.take().is_empty());
        t.ack(7);
        assert_eq!(t.take(), vec![Ev::Gap(4, 2)]);
        for _ in 0..ACK_GRACE {
            t.ack(17); // acks up to offset 16: fills the hole, delivers, then acks unseen tail
        }
        assert_eq!(
            t.take(),
            vec![Ev::Gap(6, 2), d(8, b"cccc", 3), Ev::Gap(12, 4)]
        );
        t.send(13, b"lost", 0); // too late: already declared lost
        assert!(t.take().is_empty());
        assert_eq!(t.r.stats().gap_bytes, 8);
        // The ACK of the FIN sequence number stops at the FIN.
        t.send(30, b"", FIN); // FIN at offset 29
        for _ in 0..ACK_GRACE {
            t.ack(31);
        }
        assert_eq!(t.take(), vec![Ev::Gap(16, 13), Ev::End(false)]);
    }

    /// Capture order can put an ACK before the data it acknowledges.
    #[test]
    fn ack_seen_before_its_data_loses_nothing() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.ack(5);
        t.send(1, b"abcd", 0);
        t.ack(5);
        assert_eq!(t.take(), vec![d(0, b"abcd", 2)]);
        assert_eq!(t.r.stats().gap_bytes, 0);
        // A pending hole left at flush is declared then.
        t.ack(9);
        t.flush();
        assert_eq!(t.take(), vec![Ev::Gap(4, 4)]);
    }

    #[test]
    fn flush_declares_gaps() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1, b"aa", 0);
        t.send(5, b"cc", 0);
        t.send(9, b"ee", 0);
        t.flush();
        assert_eq!(
            t.take(),
            vec![
                d(0, b"aa", 2),
                Ev::Gap(2, 2),
                d(4, b"cc", 3),
                Ev::Gap(6, 2),
                d(8, b"ee", 4)
            ]
        );
        assert!(!t.r.is_ended());

        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1, b"aa", 0);
        t.send(9, b"ee", FIN);
        t.send(20, b"", FIN); // a conflicting later FIN is ignored
        t.flush();
        assert_eq!(
            t.take(),
            vec![
                d(0, b"aa", 2),
                Ev::Gap(2, 6),
                d(8, b"ee", 3),
                Ev::End(false)
            ]
        );
        assert_eq!(t.r.stats().junk_segments, 1);
    }

    #[test]
    fn flush_fin_hole_after_data() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1, b"aa", 0);
        t.send(10, b"", FIN); // FIN at offset 9, bytes [2,9) never seen
        t.flush();
        assert_eq!(
            t.take(),
            vec![d(0, b"aa", 2), Ev::Gap(2, 7), Ev::End(false)]
        );
    }

    #[test]
    fn buffer_limit_gap() {
        let mut t = T::with(Limits {
            max_buffered_bytes: 1 << 20,
            max_segments: 2,
        });
        t.send(0, b"", SYN);
        t.send(11, b"x", 0);
        t.send(21, b"y", 0);
        t.send(31, b"z", 0);
        assert_eq!(t.take(), vec![Ev::Gap(0, 10), d(10, b"x", 2)]);
        assert_eq!(t.r.stats().buffer_limit_hits, 1);
        assert_eq!(t.r.buffered_segments(), 2);

        let mut t = T::with(Limits {
            max_buffered_bytes: 8,
            max_segments: 100,
        });
        t.send(0, b"", SYN);
        t.send(5, b"aaaa", 0); // [4,8)
        t.send(9, b"bbbbb", 0); // [8,13): 9 bytes buffered > 8
        assert_eq!(
            t.take(),
            vec![Ev::Gap(0, 4), d(4, b"aaaa", 2), d(8, b"bbbbb", 3)]
        );
        assert_eq!(t.r.stats().buffer_limit_hits, 1);
        assert_eq!(t.r.buffered_bytes(), 0);
    }

    #[test]
    fn far_away_segments_are_junk() {
        let mut t = T::new();
        t.send(0, b"", SYN);
        t.send(1 + (1 << 30) + 1, b"x", 0);
        t.send(1u32.wrapping_sub(1 << 31), b"y", 0);
        t.send(1u32.wrapping_sub((1 << 30) + 5), b"", RST); // out-of-window RST is ignored
        t.ack(1 + (1 << 31) - 1); // a far-future ACK is ignored
        assert_eq!(t.r.buffered_bytes(), 0);
        assert_eq!(t.r.stats().junk_segments, 3);
        t.send(1, b"a", 0);
        assert_eq!(t.take(), vec![d(0, b"a", 5)]);
    }

    #[test]
    fn frames_and_timestamps_follow_carrying_packets() {
        let mut r = Reassembler::new(Limits::default());
        let mut got: Vec<(u64, Vec<u8>, u64, i64)> = Vec::new();
        let mut sink = |d: Delivery<'_>| {
            if let Delivery::Data {
                offset,
                bytes,
                frame,
                ts_ns,
            } = d
            {
                got.push((offset, bytes.to_vec(), frame, ts_ns));
            }
        };
        r.segment(0, b"", true, false, false, 10, 100, &mut sink);
        r.segment(7, b"ghi", false, false, false, 11, 110, &mut sink); // [6,9)
        r.segment(4, b"def", false, false, false, 12, 120, &mut sink); // [3,6)
        r.segment(1, b"abcdefg", false, false, false, 13, 130, &mut sink); // [0,7), overlaps both
        assert_eq!(
            got,
            vec![
                (0, b"abc".to_vec(), 13, 130),
                (3, b"def".to_vec(), 12, 120),
                (6, b"ghi".to_vec(), 11, 110),
            ]
        );
    }

    /// xorshift64: a tiny deterministic PRNG for the property tests.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn one_in(&mut self, n: u64) -> bool {
            self.next().is_multiple_of(n)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Cuts [0, len) into segments, adds duplicates and overlapping ranges, then reorders them.
    fn random_segments(rng: &mut Rng, len: usize) -> Vec<(usize, usize)> {
        let mut segs = Vec::new();
        let mut a = 0;
        while a < len {
            let b = (a + 1 + rng.below(1460)).min(len);
            segs.push((a, b));
            a = b;
        }
        let n = segs.len();
        for _ in 0..rng.below(n + 1) {
            let s = segs[rng.below(n)];
            segs.push(s);
        }
        for _ in 0..rng.below(n + 1) {
            let x = rng.below(len);
            segs.push((x, (x + 1 + rng.below(3000)).min(len)));
        }
        if rng.one_in(2) {
            // Global shuffle.
            for i in (1..segs.len()).rev() {
                segs.swap(i, rng.below(i + 1));
            }
        } else {
            // Local reordering, like a real network.
            for i in 0..segs.len() {
                let j = (i + rng.below(8)).min(segs.len() - 1);
                segs.swap(i, j);
            }
        }
        segs
    }

    /// Checks that the events tile [0, end) without overlap, that Data matches `stream` and lies
    /// within the segment its frame carried, and that End (if any) comes last.
    /// Returns (end, gap bytes, End seen).
    fn check_tiling(
        ev: &[Ev],
        stream: &[u8],
        frames: &HashMap<u64, (usize, usize)>,
    ) -> (u64, u64, Option<bool>) {
        let (mut cur, mut gaps, mut end) = (0u64, 0u64, None);
        for e in ev {
            assert!(end.is_none(), "event after End: {e:?}");
            match e {
                Ev::Data { off, bytes, frame } => {
                    assert_eq!(*off, cur);
                    assert!(!bytes.is_empty());
                    let (a, b) = (*off as usize, *off as usize + bytes.len());
                    assert_eq!(&stream[a..b], &bytes[..], "data at {a}");
                    let (fa, fb) = frames[frame];
                    assert!(fa <= a && b <= fb, "frame {frame} did not carry [{a},{b})");
                    cur += bytes.len() as u64;
                }
                Ev::Gap(off, len) => {
                    assert_eq!(*off, cur);
                    assert!(*len > 0);
                    cur += len;
                    gaps += len;
                }
                Ev::End(reset) => end = Some(*reset),
            }
        }
        (cur, gaps, end)
    }

    #[test]
    fn prop_reorder_duplicate_overlap_is_lossless() {
        for seed in 0..150 {
            let mut rng = Rng::new(seed);
            let len = 1 + rng.below(30_000);
            let stream = rng.bytes(len);
            let isn = if rng.one_in(3) {
                u32::MAX - rng.below(40_000) as u32 // make the stream wrap
            } else {
                rng.next() as u32
            };
            let segs = random_segments(&mut rng, len);
            let mut t = T::with(Limits {
                max_buffered_bytes: 1 << 30,
                max_segments: 1 << 20,
            });
            let mut frames = HashMap::new();
            t.send(isn, b"", SYN);
            for &(a, b) in &segs {
                let flags = if b == len { FIN } else { 0 };
                let f = t.send(isn.wrapping_add(1 + a as u32), &stream[a..b], flags);
                frames.insert(f, (a, b));
            }
            t.flush();
            let ev = t.take();
            let (end, gaps, ended) = check_tiling(&ev, &stream, &frames);
            assert_eq!(
                (end, gaps, ended),
                (len as u64, 0, Some(false)),
                "seed {seed}"
            );
            let s = t.r.stats();
            assert_eq!(s.bytes_delivered, len as u64);
            assert_eq!((s.gaps, s.overlap_conflicts, s.junk_bytes), (0, 0, 0));
        }
    }

    #[test]
    fn prop_drops_acks_and_limits_cover_stream_exactly() {
        for seed in 0..150 {
            let mut rng = Rng::new(seed + 1_000);
            let len = 1 + rng.below(30_000);
            let stream = rng.bytes(len);
            let isn = rng.next() as u32;
            let segs = random_segments(&mut rng, len);
            let limits = if rng.one_in(2) {
                Limits {
                    max_buffered_bytes: rng.below(20_000),
                    max_segments: rng.below(40),
                }
            } else {
                Limits::default()
            };
            let mut t = T::with(limits);
            let mut frames = HashMap::new();
            let fin_at = rng.below(segs.len() + 1);
            let mut fin_sent = false;
            t.send(isn, b"", SYN);
            for (i, &(a, b)) in segs.iter().enumerate() {
                if i == fin_at {
                    t.send(isn.wrapping_add(1 + len as u32), b"", FIN);
                    fin_sent = true;
                }
                if !rng.one_in(5) {
                    let f = t.send(isn.wrapping_add(1 + a as u32), &stream[a..b], 0);
                    frames.insert(f, (a, b));
                }
                if rng.one_in(8) {
                    // The peer may ack any byte that was sent, plus the FIN once it has been sent.
                    let upto = rng.below(len + 1 + usize::from(fin_sent));
                    t.ack(isn.wrapping_add(1 + upto as u32));
                }
                assert!(t.r.buffered_bytes() <= limits.max_buffered_bytes);
                assert!(t.r.buffered_segments() <= limits.max_segments);
            }
            if !fin_sent {
                t.send(isn.wrapping_add(1 + len as u32), b"", FIN);
            }
            t.flush();
            let ev = t.take();
            let (end, gaps, ended) = check_tiling(&ev, &stream, &frames);
            assert_eq!((end, ended), (len as u64, Some(false)), "seed {seed}");
            let s = t.r.stats();
            assert_eq!(s.gap_bytes, gaps);
            assert_eq!(s.bytes_delivered + s.gap_bytes, len as u64);
        }
    }

    #[test]
    fn chaos_never_panics_and_keeps_invariants() {
        for seed in 0..60 {
            let mut rng = Rng::new(seed + 7_000);
            let limits = Limits {
                max_buffered_bytes: rng.below(50_000),
                max_segments: rng.below(200),
            };
            let base = rng.next() as u32;
            let mut t = T::with(limits);
            for _ in 0..2_000 {
                let near = base
                    .wrapping_add(rng.below(80_000) as u32)
                    .wrapping_sub(10_000);
                let seq = if rng.one_in(50) {
                    rng.next() as u32
                } else {
                    near
                };
                match rng.below(20) {
                    0 => t.ack(seq),
                    1 if rng.one_in(10) => t.flush(),
                    _ => {
                        let n = rng.below(1_500);
                        let data = rng.bytes(n);
                        let mut flags = 0;
                        if rng.one_in(50) {
                            flags |= SYN;
                        }
                        if rng.one_in(40) {
                            flags |= FIN;
                        }
                        if rng.one_in(800) {
                            flags |= RST;
                        }
                        t.send(seq, &data, flags);
                    }
                }
                assert!(t.r.buffered_bytes() <= limits.max_buffered_bytes);
                assert!(t.r.buffered_segments() <= limits.max_segments);
            }
            t.flush();
            let ev = t.take();
            let mut cur = 0;
            for (i, e) in ev.iter().enumerate() {
                match e {
                    Ev::Data { off, bytes, .. } => {
                        assert_eq!(*off, cur);
                        cur += bytes.len() as u64;
                    }
                    Ev::Gap(off, len) => {
                        assert_eq!(*off, cur);
                        cur += len;
                    }
                    Ev::End(_) => assert_eq!(i, ev.len() - 1),
                }
            }
            assert_eq!(cur, t.r.offset());
        }
    }

    #[test]
    fn adversarial_tiny_segments_are_fast_and_bounded() {
        let started = std::time::Instant::now();
        let limits = Limits::default();
        let mut rng = Rng::new(42);
        let mut t = T::with(limits);
        t.send(0, b"", SYN);
        // 100k tiny, scattered, overlapping, out-of-order segments (offset 0 never arrives).
        for i in 0..100_000u32 {
            let off = 1 + rng.below(1 << 20) as u32;
            let len = 1 + rng.below(3);
            t.send(1 + off, &[i as u8; 3][..len], 0);
            assert!(t.r.buffered_segments() <= limits.max_segments);
        }
        // Descending 1-byte segments, each of which becomes the new front of the buffer.
        let from = t.r.offset() as u32 + 300_000;
        for k in 0..100_000u32 {
            t.send(from - k, b"d", 0);
        }
        // Many pieces covered again and again by big segments. This is linear in bytes.
        let mut t2 = T::with(limits);
        t2.send(0, b"", SYN);
        for off in 2..4_002u32 {
            t2.send(1 + off, b"x", 0);
        }
        let big = vec![b'x'; 4_000];
        for _ in 0..1_000 {
            t2.send(3, &big, 0);
            assert!(t2.r.buffered_segments() <= limits.max_segments);
        }
        t.flush();
        t2.flush();
        assert!(t.r.stats().buffer_limit_hits > 0);
        assert_eq!(t.r.buffered_bytes(), 0);
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs() < 20, "took {elapsed:?}");
    }
}
