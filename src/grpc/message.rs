//! gRPC Length-Prefixed-Message framing (1-byte flag, 4-byte big-endian
//! length, payload) and per-message decompression, with caps on both.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::read::{GzDecoder, ZlibDecoder};

/// Compression named by `grpc-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// grpc-core's "deflate" is zlib-wrapped (windowBits 15).
    Deflate,
    Unsupported,
}

impl Encoding {
    pub fn from_header(v: Option<&str>) -> Encoding {
        match v.map(str::trim) {
            None | Some("") | Some("identity") => Encoding::Identity,
            Some("gzip") => Encoding::Gzip,
            Some("deflate") => Encoding::Deflate,
            Some(_) => Encoding::Unsupported,
        }
    }
}

/// One gRPC message as the application sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The compressed-flag bit of the prefix.
    pub compressed: bool,
    /// Length announced by the prefix.
    pub wire_len: u32,
    /// The payload, decompressed when it was compressed and could be.
    pub data: Bytes,
    /// Every byte of the message was seen and decoded.
    pub complete: bool,
    pub problem: Option<String>,
    /// Something about the message that was inferred rather than seen.
    pub note: Option<String>,
    /// Payloads left out of `data` (see [`Pruning`]), in order.
    pub elided: Elisions,
}

/// The payloads left out of a message (none for most messages).
#[derive(Debug, Clone, Default)]
pub struct Elisions(Option<Box<[Elision]>>);

impl From<Vec<Elision>> for Elisions {
    fn from(v: Vec<Elision>) -> Self {
        Elisions((!v.is_empty()).then(|| v.into_boxed_slice()))
    }
}

impl std::ops::Deref for Elisions {
    type Target = [Elision];
    fn deref(&self) -> &[Elision] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Message {
    /// Bytes of the message that were seen (or decompressed), counting
    /// those left out of `data`.
    pub fn seen_len(&self) -> u64 {
        self.data.len() as u64 + self.elided.iter().map(|e| e.removed).sum::<u64>()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message (on the wire, and after decompression) kept in memory.
    pub max_message: usize,
    /// Messages kept per stream direction; later ones are counted only.
    pub max_messages: usize,
    /// Decompressed bytes held at once by all messages of the process (see
    /// [`decompressed_held`]); past it, compressed messages are not decoded.
    pub max_decompressed_held: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 256 << 20,
            max_messages: 64,
            max_decompressed_held: 1 << 30,
        }
    }
}

/// Decompressed message bytes alive in this process. Decompression is the
/// one place where memory can outgrow the capture (gzip expands up to about
/// 1000 times), and every open call may hold a message, so `max_message`
/// alone bounds nothing: thousands of open calls would each hold one.
static DECOMPRESSED_HELD: AtomicUsize = AtomicUsize::new(0);

/// Decompressed bytes currently held in messages, all connections together.
pub fn decompressed_held() -> usize {
    DECOMPRESSED_HELD.load(Ordering::Relaxed)
}

/// Decompressed bytes that give their count back when the last `Bytes`
/// pointing into them is dropped.
struct Held {
    data: Vec<u8>,
    counted: usize,
}

impl Held {
    /// `decompressed` is what the message decompressed to. A pruned message
    /// keeps less than that, but is counted whole, so the limit refuses the
    /// same messages whether or not their payloads were left out.
    fn bytes(mut data: Vec<u8>, decompressed: usize) -> Bytes {
        data.shrink_to_fit();
        let counted = decompressed.max(data.capacity());
        DECOMPRESSED_HELD.fetch_add(counted, Ordering::Relaxed);
        Bytes::from_owner(Held { data, counted })
    }
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        DECOMPRESSED_HELD.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

/// What may be left out of a kept TF Serving Predict message: payloads of
/// the fields `leaf` names inside the values of the tensor map (field
/// `map`, entries of key 1 and value 2). Decoders only measure those
/// payloads, so copying megabytes of tensor values only to measure them is
/// wasted work. Everything else is kept byte for byte.
#[derive(Debug, Clone, Copy)]
pub struct Pruning {
    /// The `map<string, TensorProto>` field.
    pub map: u32,
    /// The `ModelSpec` field: prost decodes it (and its `Int64Value`
    /// version, field 2), so its structure is checked too.
    pub spec: u32,
    pub leaf: fn(u32) -> Option<Leaf>,
    /// Messages shorter than this on the wire are kept whole: copying a
    /// few KiB costs less than walking them.
    pub min_len: u32,
}

/// Which message a walked field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Spec,
    SpecVersion,
    Entry,
    Tensor,
}

/// What a left-out payload is, so that its [`Elision`] records what its
/// readers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// Only the length matters.
    Opaque,
    /// Packed varints: bytes without the continuation bit are counted.
    Varints,
    /// DT_STRING-style tensor content (varint lengths, then the bytes):
    /// the one count of leading lengths that adds up is recorded.
    StringContent,
}

/// A payload left out of a kept message. The kept bytes are the message
/// with the payload removed and the length prefix of its field, and of every
/// field around it, lowered by the bytes removed (re-encoded in the same
/// number of bytes, so no offset before them moves). A reader that meets
/// the field looks its payload offset up here to learn what was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elision {
    /// Offset in the kept bytes where the payload was.
    pub at: usize,
    /// Payload bytes left out (fewer than declared when the message was cut).
    pub removed: u64,
    /// [`Leaf::Varints`]: bytes of the payload that end a varint.
    pub varint_ends: u64,
    /// [`Leaf::StringContent`]: the number n of leading varint lengths for
    /// which the lengths and the n varints add up to the whole payload.
    pub strings: Option<u64>,
}

/// Bytes left out of `part`, a slice of the kept message `kept` (a slice of
/// anything else had nothing left out).
pub fn removed_within(kept: &[u8], elided: &[Elision], part: &[u8]) -> u64 {
    if elided.is_empty() {
        return 0;
    }
    let Some(start) = offset_in(kept, part) else {
        return 0;
    };
    let end = start + part.len();
    let from = elided.partition_point(|e| e.at < start);
    elided[from..]
        .iter()
        .take_while(|e| e.at <= end)
        .map(|e| e.removed)
        .sum()
}

/// The elision whose payload began where `payload` begins.
pub fn elision_at<'e>(kept: &[u8], elided: &'e [Elision], payload: &[u8]) -> Option<&'e Elision> {
    let at = offset_in(kept, payload)?;
    elided
        .binary_search_by_key(&at, |e| e.at)
        .ok()
        .map(|i| &elided[i])
}

/// Offset of `part` in `whole`, if `part` is a slice of it.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let off = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (off + part.len() <= whole.len()).then_some(off)
}

/// One nested message field being walked.
#[derive(Debug, Clone, Copy)]
struct Frame {
    level: Level,
    /// End of the field's payload (offset in the bytes fed).
    end: u64,
    /// Where its length prefix is in the kept bytes, and how long it is.
    len_at: usize,
    len_width: u8,
    declared: u64,
    /// `removed` when the field began.
    removed_before: u64,
}

#[derive(Debug, Clone, Copy)]
enum Walk {
    /// At the start of a field (or waiting for its key and length).
    Header,
    /// Keeping bytes up to this offset without looking at them.
    CopyTo(u64),
    /// Leaving out a payload that ends at `end`.
    Elide {
        end: u64,
        leaf: Leaf,
        field: Frame,
        strings: StringScan,
    },
    /// Keeping everything from here on.
    Verbatim,
}

/// Incremental protobuf walk of one message (see [`Pruning`]). Offsets are
/// counted in the bytes fed; the kept bytes are those minus `removed`.
///
/// Readers must see the kept message as they would the whole one. Inside a
/// TensorProto (opaque bytes to prost; read by a reader bounded to its
/// slice) a malformed field only ends pruning in that tensor. Elsewhere
/// prost may read past the end of a malformed field and compares lengths
/// with what is left of the whole buffer, so the first malformed byte ends
/// pruning for the rest of the message.
#[derive(Debug)]
struct Pruner {
    pruning: Pruning,
    /// Declared length of the message.
    len: u64,
    fed: u64,
    removed: u64,
    /// Start of the field being read when in `Walk::Header`.
    cur: u64,
    frames: Vec<Frame>,
    walk: Walk,
    elided: Vec<Elision>,
    /// Whether the message may be JSON text (its first non-blank byte is `{`
    /// or `[`): decoders then look at every byte, so nothing is left out.
    json_like: Option<bool>,
}

/// Longest field key plus length prefix.
const MAX_HEADER: u64 = 20;

impl Pruner {
    fn new(pruning: Pruning, len: u64) -> Self {
        Pruner {
            pruning,
            len,
            fed: 0,
            removed: 0,
            cur: 0,
            frames: Vec::new(),
            walk: Walk::Header,
            elided: Vec::new(),
            json_like: None,
        }
    }

    fn kept(&self, at: u64) -> usize {
        (at - self.removed) as usize
    }

    fn push(&mut self, out: &mut Vec<u8>, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.walk {
                Walk::Verbatim => {
                    out.extend_from_slice(data);
                    self.fed += data.len() as u64;
                    return;
                }
                Walk::CopyTo(end) => {
                    let end = *end;
                    let n = ((end - self.fed) as usize).min(data.len());
                    out.extend_from_slice(&data[..n]);
                    self.fed += n as u64;
                    data = &data[n..];
                    if self.fed == end {
                        self.cur = end;
                        self.next_field(out);
                    }
                }
                Walk::Elide {
                    end, leaf, strings, ..
                } => {
                    let n = ((*end - self.fed) as usize).min(data.len());
                    account(*leaf, strings, &data[..n], self.elided.last_mut());
                    self.fed += n as u64;
                    self.removed += n as u64;
                    data = &data[n..];
                    if self.fed == *end {
                        self.end_elision(out);
                    }
                }
                Walk::Header => {
                    let limit = self.frames.last().map_or(self.len, |f| f.end);
                    let want = (self.cur + MAX_HEADER).min(limit).saturating_sub(self.fed);
                    let n = (want as usize).min(data.len());
                    out.extend_from_slice(&data[..n]);
                    self.fed += n as u64;
                    data = &data[n..];
                    self.header(out, limit);
                }
            }
        }
    }

    /// Reads the field at `cur` if its key and length are in.
    fn header(&mut self, out: &mut Vec<u8>, limit: u64) {
        let have = &out[self.kept(self.cur)..self.kept(self.fed.min(limit))];
        let at_limit = self.fed >= limit;
        let mut pos = 0;
        let Some(key) = read_varint(have, &mut pos) else {
            if at_limit || have.len() >= 10 {
                self.malformed(out, limit);
            }
            return;
        };
        let (num, wire_type) = (key >> 3, key & 7);
        let width_at = pos;
        let len = match wire_type {
            0 | 2 => match read_varint(have, &mut pos) {
                Some(l) if wire_type == 2 => l,
                Some(_) => 0,
                None if at_limit || have.len() - width_at >= 10 => {
                    self.malformed(out, limit);
                    return;
                }
                None => return,
            },
            1 => 8,
            5 => 4,
            _ => u64::MAX,
        };
        let body = self.cur + pos as u64;
        let end = body.checked_add(len).filter(|&e| e <= limit);
        let (Some(end), false) = (end, num == 0) else {
            self.malformed(out, limit);
            return;
        };
        let level = self.frames.last().map_or(Level::Top, |f| f.level);
        let frame = |level| Frame {
            level,
            end,
            len_at: self.kept(self.cur) + width_at,
            len_width: (pos - width_at) as u8,
            declared: len,
            removed_before: self.removed,
        };
        let p = &self.pruning;
        let inner = match (level, wire_type == 2, num) {
            (Level::Top, true, n) if n == u64::from(p.map) => Some(Level::Entry),
            (Level::Top, true, n) if n == u64::from(p.spec) => Some(Level::Spec),
            (Level::Spec, true, 2) => Some(Level::SpecVersion),
            (Level::Entry, true, 2) => Some(Level::Tensor),
            _ => None,
        };
        if let Some(inner) = inner {
            self.frames.push(frame(inner));
            self.cur = body;
            self.walk = Walk::Header;
            self.settle(out);
            return;
        }
        let leaf = (wire_type == 2 && level == Level::Tensor && len > 0)
            .then(|| (self.pruning.leaf)(num as u32))
            .flatten();
        let frame = frame(Level::Tensor);
        match leaf {
            Some(leaf) if !self.json_like(out) => {
                self.elided.push(Elision {
                    at: self.kept(body),
                    removed: 0,
                    varint_ends: 0,
                    strings: None,
                });
                let mut strings = StringScan::new(len);
                // Payload bytes already read along with the header.
                let start = self.kept(body);
                let got = (self.fed.min(end) - body) as usize;
                account(
                    leaf,
                    &mut strings,
                    &out[start..start + got],
                    self.elided.last_mut(),
                );
                out.drain(start..start + got);
                self.removed += got as u64;
                self.walk = Walk::Elide {
                    end,
                    leaf,
                    field: frame,
                    strings,
                };
                if self.fed >= end {
                    self.end_elision(out);
                }
            }
            _ => {
                self.walk = Walk::CopyTo(end);
                self.settle(out);
            }
        }
    }

    /// A field that does not parse (see [`Pruner`]).
    fn malformed(&mut self, out: &mut Vec<u8>, limit: u64) {
        let in_tensor = self.frames.last().is_some_and(|f| f.level == Level::Tensor);
        self.walk = if in_tensor {
            Walk::CopyTo(limit)
        } else {
            Walk::Verbatim
        };
        self.settle(out);
    }

    fn json_like(&mut self, out: &[u8]) -> bool {
        *self.json_like.get_or_insert_with(|| {
            matches!(
                out.iter().find(|b| !b.is_ascii_whitespace()),
                Some(b'{') | Some(b'[')
            )
        })
    }

    /// After a state change: moves on if bytes already read complete it.
    fn settle(&mut self, out: &mut Vec<u8>) {
        match self.walk {
            Walk::CopyTo(end) if self.fed >= end => {
                self.cur = end;
                self.next_field(out);
            }
            Walk::Header if self.fed > self.cur => {
                let limit = self.frames.last().map_or(self.len, |f| f.end);
                self.header(out, limit);
            }
            _ => {}
        }
    }

    fn end_elision(&mut self, out: &mut Vec<u8>) {
        let Walk::Elide {
            end,
            field,
            strings,
            ..
        } = self.walk
        else {
            return;
        };
        if let Some(e) = self.elided.last_mut() {
            e.strings = strings.matched;
        }
        self.close(out, &field);
        self.cur = end;
        self.next_field(out);
    }

    /// `cur` moved to the end of a field: closes the frames that end there
    /// and reads on.
    fn next_field(&mut self, out: &mut Vec<u8>) {
        while let Some(f) = self.frames.last().copied() {
            if self.cur < f.end {
                break;
            }
            self.close(out, &f);
            self.frames.pop();
        }
        self.walk = if self.cur >= self.len {
            Walk::Verbatim
        } else {
            Walk::Header
        };
        self.settle(out);
    }

    /// Lowers the length prefix of `f` by the bytes removed inside it.
    fn close(&self, out: &mut [u8], f: &Frame) {
        let removed = self.removed - f.removed_before;
        if removed > 0 {
            let width = usize::from(f.len_width);
            write_padded_varint(&mut out[f.len_at..f.len_at + width], f.declared - removed);
        }
    }

    /// The message ended (or was cut): fields still open keep what was removed so far.
    fn finish(&mut self, out: &mut [u8]) {
        if let Walk::Elide { field, strings, .. } = self.walk {
            if let Some(e) = self.elided.last_mut() {
                e.strings = strings.matched;
            }
            self.close(out, &field);
        }
        for f in self.frames.iter().rev() {
            self.close(out, f);
        }
        self.elided.retain(|e| e.removed > 0);
    }
}

/// Records what `part` of a left-out payload holds.
fn account(leaf: Leaf, strings: &mut StringScan, part: &[u8], e: Option<&mut Elision>) {
    let Some(e) = e else { return };
    e.removed += part.len() as u64;
    match leaf {
        Leaf::Opaque => {}
        Leaf::Varints => {
            e.varint_ends += part.iter().filter(|&&b| b & 0x80 == 0).count() as u64;
        }
        Leaf::StringContent => strings.feed(part),
    }
}

/// Reads a varint the way the tensor reader does (at most 10 bytes).
fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let byte = *b.get(*pos + i)?;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Some(v);
        }
    }
    None
}

/// Writes `v` as a varint of exactly `out.len()` bytes (protobuf readers
/// accept the redundant continuation bytes). `v` fits: it is at most the
/// value those bytes held.
fn write_padded_varint(out: &mut [u8], mut v: u64) {
    let last = out.len() - 1;
    for (i, b) in out.iter_mut().enumerate() {
        if i == last {
            *b = (v & 0x7f) as u8;
        } else {
            *b = (v & 0x7f) as u8 | 0x80;
            v >>= 7;
        }
    }
}

/// Finds, over a DT_STRING tensor content fed in pieces, the count n for
/// which n varint lengths (each at most u32::MAX) plus the n varints
/// themselves make up exactly the declared length: the check
/// `Tensor::FromProto` makes. The sums only grow, so at most one n fits and
/// the scan stops as soon as it is found or overshot.
#[derive(Debug, Clone, Copy)]
struct StringScan {
    declared: u64,
    value: u64,
    shift: u32,
    sum: u64,
    /// Bytes of the completed varints.
    pos: u64,
    count: u64,
    done: bool,
    matched: Option<u64>,
}

impl StringScan {
    fn new(declared: u64) -> Self {
        StringScan {
            declared,
            value: 0,
            shift: 0,
            sum: 0,
            pos: 0,
            count: 0,
            done: false,
            matched: None,
        }
    }

    fn feed(&mut self, mut part: &[u8]) {
        while !self.done && !part.is_empty() {
            if self.shift == 0 {
                // Runs of zero bytes are zero lengths: skip them in one step.
                let zeros = part.iter().position(|&b| b != 0).unwrap_or(part.len()) as u64;
                if zeros > 0 {
                    let need = self.declared - self.sum - self.pos;
                    if need <= zeros {
                        self.count += need;
                        self.matched = Some(self.count);
                        self.done = true;
                        return;
                    }
                    self.pos += zeros;
                    self.count += zeros;
                    part = &part[zeros as usize..];
                    continue;
                }
            }
            let b = part[0];
            part = &part[1..];
            self.value |= u64::from(b & 0x7f) << (7 * self.shift);
            self.shift += 1;
            if b & 0x80 != 0 {
                if self.shift == 10 {
                    self.done = true;
                }
                continue;
            }
            self.pos += u64::from(self.shift);
            self.count += 1;
            let value = self.value;
            self.value = 0;
            self.shift = 0;
            if value > u64::from(u32::MAX) {
                self.done = true;
                continue;
            }
            self.sum += value;
            match (self.sum + self.pos).cmp(&self.declared) {
                std::cmp::Ordering::Equal => {
                    self.matched = Some(self.count);
                    self.done = true;
                }
                std::cmp::Ordering::Greater => self.done = true,
                std::cmp::Ordering::Less => {}
            }
        }
    }
}

#[derive(Debug)]
enum State {
    Prefix {
        buf: [u8; 5],
        have: usize,
    },
    Body {
        compressed: bool,
        len: u32,
        keep: bool,
        lost: u64,
        seen: u64,
    },
    /// Message boundaries unknown after a loss in a prefix.
    Lost,
}

/// Splits one direction of a stream into messages.
#[derive(Debug)]
pub struct Deframer {
    state: State,
    buf: Vec<u8>,
    pub encoding: Encoding,
    pub messages: Vec<Message>,
    /// Messages beyond `max_messages` (counted, not kept).
    pub dropped_messages: u64,
    /// Bytes lost with framing (after a gap in a prefix).
    pub unframed_bytes: u64,
    /// Not gRPC (content-type says otherwise): the whole body is one message.
    raw: Option<u64>,
    limits: Limits,
    /// Set when the method is known and its messages may be pruned.
    pruning: Option<Pruning>,
    /// Walks the uncompressed message being received, when pruning (boxed:
    /// calls move, and most messages are too small to prune).
    pruner: Option<Box<Pruner>>,
}

impl Deframer {
    pub fn new(limits: Limits) -> Self {
        Deframer {
            state: State::Prefix {
                buf: [0; 5],
                have: 0,
            },
            buf: Vec::new(),
            encoding: Encoding::Identity,
            messages: Vec::new(),
            dropped_messages: 0,
            unframed_bytes: 0,
            raw: None,
            limits,
            pruning: None,
            pruner: None,
        }
    }

    /// Lets uncompressed messages from here on be kept without the payloads
    /// `pruning` names.
    pub fn prune(&mut self, pruning: Pruning) {
        self.pruning = Some(pruning);
    }

    /// The kept bytes of the message being closed, and what was left out.
    // Inlined: called for every message, most of them small.
    #[inline(always)]
    fn take_kept(&mut self) -> (Bytes, Elisions) {
        let elided = match self.pruner.take() {
            Some(mut p) => {
                p.finish(&mut self.buf);
                Elisions::from(std::mem::take(&mut p.elided))
            }
            None => Elisions::default(),
        };
        (Bytes::from(std::mem::take(&mut self.buf)), elided)
    }

    /// Treats the stream's body as one opaque message (a client that sent
    /// JSON or other non-gRPC content): no length prefixes to misread.
    pub fn set_raw(&mut self) {
        if self.raw.is_none() && !self.in_progress() && self.messages.is_empty() {
            self.raw = Some(0);
        }
    }

    pub fn push(&mut self, mut data: &[u8]) {
        if let Some(total) = &mut self.raw {
            *total += data.len() as u64;
            let room = self.limits.max_message.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            return;
        }
        while !data.is_empty() {
            match &mut self.state {
                State::Prefix { buf, have } => {
                    let n = (5 - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    data = &data[n..];
                    if *have == 5 {
                        let compressed = buf[0] & 1 == 1;
                        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                        let keep = (len as usize) <= self.limits.max_message
                            && self.messages.len() < self.limits.max_messages;
                        self.buf.clear();
                        self.pruner = None;
                        if keep && !compressed {
                            if let Some(p) = self.pruning.filter(|p| len >= p.min_len.max(1)) {
                                self.pruner = Some(Box::new(Pruner::new(p, u64::from(len))));
                            }
                        }
                        if keep {
                            // Reserve what the prefix announces, but never more than
                            // a modest amount up front: the prefix is untrusted. A
                            // pruned message keeps little of itself.
                            let cap = if self.pruner.is_some() {
                                4 << 10
                            } else {
                                4 << 20
                            };
                            self.buf.reserve((len as usize).min(cap));
                        }
                        self.state = State::Body {
                            compressed,
                            len,
                            keep,
                            lost: 0,
                            seen: 0,
                        };
                        if len == 0 {
                            self.finish_message();
                        }
                    }
                }
                State::Body {
                    len, keep, seen, ..
                } => {
                    let left = u64::from(*len) - *seen;
                    let n = (left as usize).min(data.len());
                    if *keep {
                        match &mut self.pruner {
                            Some(p) => p.push(&mut self.buf, &data[..n]),
                            None => self.buf.extend_from_slice(&data[..n]),
                        }
                    }
                    *seen += n as u64;
                    data = &data[n..];
                    if *seen == u64::from(*len) {
                        self.finish_message();
                    }
                }
                State::Lost => {
                    self.unframed_bytes += data.len() as u64;
                    return;
                }
            }
        }
    }

    /// `len` bytes of this direction were lost.
    pub fn lost(&mut self, len: u64) {
        match &mut self.state {
            State::Body {
                len: total,
                lost,
                seen,
                ..
            } => {
                let left = u64::from(*total) - *seen;
                if len <= left {
                    *lost += len;
                    *seen += len;
                    if *seen == u64::from(*total) {
                        self.finish_message();
                    }
                } else {
                    *lost += left;
                    *seen += left;
                    self.finish_message();
                    self.unframed_bytes += len - left;
                    self.state = State::Lost;
                }
            }
            State::Prefix { .. } | State::Lost => {
                self.unframed_bytes += len;
                self.state = State::Lost;
            }
        }
    }

    /// The direction ended; a message still open is recorded as cut short.
    pub fn finish(&mut self) {
        if let Some(total) = self.raw.take() {
            if total > 0 {
                let data = Bytes::from(std::mem::take(&mut self.buf));
                let complete = data.len() as u64 == total;
                self.record(Message {
                    compressed: false,
                    wire_len: total.min(u64::from(u32::MAX)) as u32,
                    data,
                    complete,
                    problem: (!complete).then(|| "body larger than the message limit".to_string()),
                    note: None,
                    elided: Elisions::default(),
                });
            }
            self.raw = Some(0);
            return;
        }
        if let State::Body {
            compressed,
            len,
            keep,
            seen,
            ..
        } = self.state
        {
            let missing = u64::from(len) - seen;
            let (data, elided) = if keep {
                self.take_kept()
            } else {
                (Bytes::new(), Elisions::default())
            };
            self.record(Message {
                compressed,
                wire_len: len,
                data,
                complete: false,
                problem: Some(format!(
                    "stream ended {missing} bytes before the end of the message"
                )),
                note: None,
                elided,
            });
            self.state = State::Prefix {
                buf: [0; 5],
                have: 0,
            };
        }
    }

    /// Bytes sitting in a partial prefix or partial message (for "incomplete" notes).
    pub fn in_progress(&self) -> bool {
        match &self.state {
            State::Prefix { have, .. } => *have > 0,
            State::Body { .. } => true,
            State::Lost => false,
        }
    }

    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// Nothing has been seen yet in this direction.
    pub fn is_fresh(&self) -> bool {
        self.messages.is_empty()
            && !self.in_progress()
            && !self.is_lost()
            && self.raw.is_none_or(|t| t == 0)
    }

    /// Framing of the stream is unknown from here on (HTTP/2 lost sync, or
    /// the stream began before the capture): the open message is cut short.
    pub fn desync(&mut self) {
        if let State::Body { .. } = self.state {
            self.finish();
        }
        self.state = State::Lost;
    }

    /// Whether `data` can be the start of a length-prefixed message: the
    /// flag is 0 or 1 and the length fits the limit.
    pub fn plausible_start(&self, data: &[u8]) -> bool {
        match data {
            [] => true,
            [flag, rest @ ..] if *flag <= 1 => match rest {
                [a, b, c, d, ..] => {
                    (u32::from_be_bytes([*a, *b, *c, *d]) as usize) <= self.limits.max_message
                }
                _ => true,
            },
            _ => false,
        }
    }

    fn finish_message(&mut self) {
        let State::Body {
            compressed,
            len,
            keep,
            lost,
            ..
        } = self.state
        else {
            return;
        };
        self.state = State::Prefix {
            buf: [0; 5],
            have: 0,
        };
        if !keep {
            let problem = if (len as usize) > self.limits.max_message {
                Some(format!(
                    "message of {len} bytes exceeds the {} byte limit; not decoded",
                    self.limits.max_message
                ))
            } else {
                None
            };
            self.record(Message {
                compressed,
                wire_len: len,
                data: Bytes::new(),
                complete: false,
                problem,
                note: None,
                elided: Elisions::default(),
            });
            return;
        }
        let (raw, elided) = self.take_kept();
        if lost > 0 {
            self.record(Message {
                compressed,
                wire_len: len,
                data: raw,
                complete: false,
                problem: Some(format!("{lost} bytes of this message were not captured")),
                note: None,
                elided,
            });
            return;
        }
        let msg = if compressed {
            self.decompress(len, &raw)
        } else {
            Message {
                compressed,
                wire_len: len,
                data: raw,
                complete: true,
                problem: None,
                note: None,
                elided,
            }
        };
        self.record(msg);
    }

    fn decompress(&self, len: u32, raw: &[u8]) -> Message {
        let (gzip, sniffed) = match self.encoding {
            Encoding::Gzip => (true, None),
            Encoding::Deflate => (false, None),
            // No grpc-encoding seen (it may be an HPACK entry from before the
            // capture): recognise gzip and zlib by their headers, and say so.
            Encoding::Identity if raw.starts_with(&[0x1f, 0x8b]) => (true, Some("gzip")),
            Encoding::Identity
                if raw.len() >= 2
                    && raw[0] & 0x0f == 8
                    && (u16::from(raw[0]) << 8 | u16::from(raw[1])) % 31 == 0 =>
            {
                (false, Some("deflate"))
            }
            Encoding::Identity => {
                return self.failed(
                    len,
                    "compressed flag set but no grpc-encoding was negotiated",
                )
            }
            Encoding::Unsupported => {
                return self.failed(len, "compressed with an encoding tfwire does not decode")
            }
        };
        let max = self.limits.max_message;
        let room = self
            .limits
            .max_decompressed_held
            .saturating_sub(decompressed_held());
        let cap = max.min(room) as u64;
        let mut out = Vec::new();
        let mut decoder: Box<dyn Read> = if gzip {
            Box::new(GzDecoder::new(raw).take(cap + 1))
        } else {
            Box::new(ZlibDecoder::new(raw).take(cap + 1))
        };
        let (result, size, elided) = match self.pruning.filter(|p| len >= p.min_len) {
            // Pruned as it is decompressed: the whole message is never held.
            // Its length is known only at the end, so it bounds nothing.
            Some(p) => {
                let mut pruner = Pruner::new(p, u64::MAX);
                let mut chunk = vec![0u8; 64 << 10];
                let mut size = 0usize;
                let result = loop {
                    match decoder.read(&mut chunk) {
                        Ok(0) => break Ok(size),
                        Ok(n) => {
                            size += n;
                            pruner.push(&mut out, &chunk[..n]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                pruner.finish(&mut out);
                (result, size, Elisions::from(pruner.elided))
            }
            None => {
                let result = decoder.read_to_end(&mut out);
                let size = out.len();
                (result, size, Elisions::default())
            }
        };
        match result {
            Ok(_) if size as u64 <= cap => Message {
                compressed: true,
                wire_len: len,
                data: Held::bytes(out, size),
                complete: true,
                problem: None,
                note: sniffed.map(|what| {
                    format!("grpc-encoding not seen; the message was recognised as {what} by its header")
                }),
                elided,
            },
            Ok(_) if room < max => self.failed(
                len,
                &format!(
                    "decompressed messages held at once would exceed the {} byte limit; not decoded",
                    self.limits.max_decompressed_held
                ),
            ),
            _ if sniffed.is_some() => {
                self.failed(len, "compressed flag set but no grpc-encoding was seen")
            }
            Ok(_) => self.failed(
                len,
                &format!("decompresses to more than the {max} byte limit; not decoded"),
            ),
            Err(e) => self.failed(len, &format!("decompression failed: {e}")),
        }
    }

    fn failed(&self, len: u32, why: &str) -> Message {
        Message {
            compressed: true,
            wire_len: len,
            data: Bytes::new(),
            complete: false,
            problem: Some(why.to_string()),
            note: None,
            elided: Elisions::default(),
        }
    }

    fn record(&mut self, m: Message) {
        if self.messages.is_empty() && self.limits.max_messages > 0 {
            // A unary call's only message: `push` would reserve four.
            self.messages = vec![m];
        } else if self.messages.len() < self.limits.max_messages {
            self.messages.push(m);
        } else {
            self.dropped_messages += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn framed(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn messages_split_and_joined_across_chunks() {
        let mut wire = framed(0, b"hello");
        wire.extend(framed(0, b""));
        wire.extend(framed(0, b"world!"));
        for split in 1..wire.len() {
            let mut d = Deframer::new(Limits::default());
            for chunk in wire.chunks(split) {
                d.push(chunk);
            }
            d.finish();
            let got: Vec<_> = d.messages.iter().map(|m| m.data.to_vec()).collect();
            assert_eq!(
                got,
                vec![b"hello".to_vec(), vec![], b"world!".to_vec()],
                "split {split}"
            );
            assert!(d.messages.iter().all(|m| m.complete));
        }
    }

    #[test]
    fn gzip_and_zlib_deflate() {
        let payload = vec![42u8; 10_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&payload).expect("gz");
        let gz = gz.finish().expect("gz");
        let mut d = Deframer::new(Limits::default());
        d.encoding = Encoding::Gzip;
        d.push(&framed(1, &gz));
        assert_eq!(d.messages[0].data.len(), 10_000);
        assert!(d.messages[0].compressed && d.messages[0].complete);

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&payload).expect("z");
        let z = z.finish().expect("z");
        let mut d = Deframer::new(Limits::default());
        d.encoding = Encoding::Deflate;
        d.push(&framed(1, &z));
        d.push(&framed(0, b"plain")); // flag 0 even with an encoding negotiated
        assert_eq!(d.messages[0].data.len(), 10_000);
        assert_eq!(&d.messages[1].data[..], b"plain");
    }

    #[test]
    fn decompression_bomb_is_capped() {
        let payload = vec![0u8; 1 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&payload).expect("gz");
        let gz = gz.finish().expect("gz");
        let mut d = Deframer::new(Limits {
            max_message: 64 << 10,
            max_messages: 4,
            ..Limits::default()
        });
        d.encoding = Encoding::Gzip;
        d.push(&framed(1, &gz));
        assert!(!d.messages[0].complete);
        assert!(d.messages[0]
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("limit"));
    }

    #[test]
    fn oversized_message_is_skipped_not_buffered() {
        let mut d = Deframer::new(Limits {
            max_message: 10,
            max_messages: 4,
            ..Limits::default()
        });
        d.push(&framed(0, &[1u8; 100]));
        d.push(&framed(0, b"ok"));
        assert_eq!(d.messages.len(), 2);
        assert!(!d.messages[0].complete && d.messages[0].data.is_empty());
        assert_eq!(&d.messages[1].data[..], b"ok");
    }

    #[test]
    fn loss_inside_a_body_keeps_framing() {
        let mut d = Deframer::new(Limits::default());
        let first = framed(0, &[7u8; 20]);
        d.push(&first[..10]);
        d.lost(5);
        d.push(&first[15..]);
        d.push(&framed(0, b"next"));
        assert!(!d.messages[0].complete);
        assert_eq!(&d.messages[1].data[..], b"next");
        assert!(d.messages[1].complete);
    }

    #[test]
    fn loss_in_a_prefix_loses_framing() {
        let mut d = Deframer::new(Limits::default());
        d.push(&[0, 0]);
        d.lost(3);
        d.push(b"whatever");
        assert!(d.is_lost());
        assert!(d.messages.is_empty());
        assert_eq!(d.unframed_bytes, 11);
    }

    #[test]
    fn hostile_length_does_not_preallocate() {
        let mut d = Deframer::new(Limits::default());
        d.push(&[0, 0x0f, 0xff, 0xff, 0xff, 1, 2, 3]);
        d.finish();
        assert_eq!(d.messages.len(), 1);
        assert!(!d.messages[0].complete);
    }

    /// Found with the hostile-capture tests: every open call could hold a
    /// message decompressed to `max_message` (256 MiB by default), so a
    /// capture of a few MiB of gzip bombs on many streams made the process
    /// hold gigabytes. The total held at once is capped now.
    #[test]
    fn decompressed_bytes_held_at_once_are_capped() {
        const MIB: usize = 1 << 20;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; MIB]).expect("gz");
        let bomb = framed(1, &gz.finish().expect("gz"));
        let limits = Limits {
            max_message: MIB,
            max_messages: 4,
            max_decompressed_held: 3 * MIB + MIB / 2,
        };
        let open_calls: Vec<Deframer> = (0..6)
            .map(|_| {
                let mut d = Deframer::new(limits);
                d.encoding = Encoding::Gzip;
                d.push(&bomb);
                d
            })
            .collect();
        let decoded = open_calls
            .iter()
            .filter(|d| d.messages[0].complete && d.messages[0].data.len() == MIB)
            .count();
        let refused = open_calls
            .iter()
            .filter(|d| {
                d.messages[0]
                    .problem
                    .as_deref()
                    .is_some_and(|p| p.contains("held at once"))
            })
            .count();
        assert_eq!((decoded, refused), (3, 3));
        // Dropping the calls gives the room back.
        drop(open_calls);
        let mut d = Deframer::new(limits);
        d.encoding = Encoding::Gzip;
        d.push(&bomb);
        assert!(d.messages[0].complete);
    }
}
