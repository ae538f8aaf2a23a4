//! HPACK header block decoder (RFC 7541) for a passive observer.
//!
//! Besides the normal decoder, this one can start in the middle of a connection, when
//! the dynamic table already holds entries that were never seen. HPACK inserts at the
//! front and evicts from the back (RFC 7541 §2.3.3, §4.4), so the entries we *did* see are
//! always the newest ones: index positions below the number of known entries resolve
//! exactly, positions past them are "unknown" and decode to `None`.
//!
//! Soundness rule used throughout: our table and the peer's real table must agree on every
//! position both hold. Keeping an entry the peer already evicted is harmless (a compliant
//! encoder never references it), so when exact sizes are unknown we err towards keeping:
//! unknown names count as zero bytes and an unknown maximum size is assumed to be the
//! protocol limit. Dropping an entry the peer still has is only allowed together with
//! switching to partial mode, which turns references to it into `None`.

use std::collections::VecDeque;
use std::ops::Range;

use super::huffman::{self, HuffmanError};

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    /// None when the field referenced a dynamic-table entry that this decoder never saw
    /// (capture started mid-connection).
    pub name: Option<Vec<u8>>,
    /// None only for an indexed field (RFC 7541 §6.1) referencing an unseen entry.
    pub value: Option<Vec<u8>>,
}

/// The decoded fields of one header block, their bytes back to back in one buffer
/// that is reused from block to block (no allocation per field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    bytes: Vec<u8>,
    fields: Vec<Span>,
}

/// Byte ranges in [`HeaderBlock::bytes`]; None as in [`HeaderField`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    name: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
}

/// One field of a [`HeaderBlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a> {
    pub name: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl HeaderBlock {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
    }

    /// Makes this block a copy of `other`, reusing its buffers.
    pub fn copy_from(&mut self, other: &HeaderBlock) {
        self.bytes.clear();
        self.bytes.extend_from_slice(&other.bytes);
        self.fields.clear();
        self.fields.extend_from_slice(&other.fields);
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn iter(&self) -> Fields<'_> {
        Fields {
            bytes: &self.bytes,
            spans: self.fields.iter(),
        }
    }

    /// Adds a field (the decoder's limits are not applied here).
    pub fn push(&mut self, name: Option<&[u8]>, value: Option<&[u8]>) {
        let name = name.map(|n| self.append(n));
        let value = value.map(|v| self.append(v));
        self.fields.push(Span { name, value });
    }

    /// The bytes of every field, names and values back to back in order
    /// (fields with an unknown name or value have no bytes for it).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where each field's name and value lie in [`HeaderBlock::bytes`].
    pub fn ranges(
        &self,
    ) -> impl ExactSizeIterator<Item = (Option<Range<usize>>, Option<Range<usize>>)> + '_ {
        self.fields
            .iter()
            .map(|f| (f.name.map(|(s, e)| s..e), f.value.map(|(s, e)| s..e)))
    }

    /// Owned copies of the fields.
    pub fn to_fields(&self) -> Vec<HeaderField> {
        self.iter()
            .map(|f| HeaderField {
                name: f.name.map(<[u8]>::to_vec),
                value: f.value.map(<[u8]>::to_vec),
            })
            .collect()
    }

    fn append(&mut self, b: &[u8]) -> (usize, usize) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        (start, self.bytes.len())
    }
}

impl<'a> IntoIterator for &'a HeaderBlock {
    type Item = FieldRef<'a>;
    type IntoIter = Fields<'a>;

    fn into_iter(self) -> Fields<'a> {
        self.iter()
    }
}

/// Iterator over the fields of a [`HeaderBlock`].
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    bytes: &'a [u8],
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = FieldRef<'a>;

    fn next(&mut self) -> Option<FieldRef<'a>> {
        let f = self.spans.next()?;
        let at = |r: Option<(usize, usize)>| r.and_then(|(s, e)| self.bytes.get(s..e));
        Some(FieldRef {
            name: at(f.name),
            value: at(f.value),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for Fields<'_> {}

/// Why a header block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HpackError {
    /// An integer (RFC 7541 §5.1) needs more than 5 continuation bytes or exceeds u32.
    IntegerOverflow,
    /// The block ends inside an integer or string.
    Truncated,
    /// Index 0, or an index past every entry that can exist (RFC 7541 §2.3.3).
    InvalidIndex(usize),
    /// A Huffman-coded string is malformed (RFC 7541 §5.2).
    Huffman(HuffmanError),
    /// A dynamic table size update exceeds SETTINGS_HEADER_TABLE_SIZE (RFC 7541 §6.3).
    SizeUpdateTooLarge { requested: usize, limit: usize },
    /// A dynamic table size update follows a header field (RFC 7541 §4.2).
    SizeUpdateNotAtStart,
    /// Sum of name + value + 32 over the block's fields exceeds `Limits::max_header_list_size`.
    HeaderListTooLarge { limit: usize },
    /// More fields than `Limits::max_fields`.
    TooManyFields { limit: usize },
    /// A string (encoded or decoded) is longer than `Limits::max_string_len`.
    StringTooLong { len: usize, limit: usize },
}

impl HpackError {
    /// True for [`Limits`] violations: the block was well-formed and the decoder is still
    /// in sync with the peer. False for malformed blocks, after which the decoder has
    /// marked its state lost.
    pub fn is_limit(&self) -> bool {
        match self {
            HpackError::HeaderListTooLarge { .. }
            | HpackError::TooManyFields { .. }
            | HpackError::StringTooLong { .. } => true,
            HpackError::IntegerOverflow
            | HpackError::Truncated
            | HpackError::InvalidIndex(_)
            | HpackError::Huffman(_)
            | HpackError::SizeUpdateTooLarge { .. }
            | HpackError::SizeUpdateNotAtStart => false,
        }
    }
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HpackError::IntegerOverflow => f.write_str("hpack integer overflow"),
            HpackError::Truncated => f.write_str("hpack header block truncated"),
            HpackError::InvalidIndex(i) => write!(f, "hpack invalid index {i}"),
            HpackError::Huffman(e) => write!(f, "hpack: {e}"),
            HpackError::SizeUpdateTooLarge { requested, limit } => write!(
                f,
                "hpack dynamic table size update {requested} exceeds limit {limit}"
            ),
            HpackError::SizeUpdateNotAtStart => {
                f.write_str("hpack dynamic table size update after a header field")
            }
            HpackError::HeaderListTooLarge { limit } => {
                write!(f, "hpack header list larger than {limit} bytes")
            }
            HpackError::TooManyFields { limit } => {
                write!(f, "hpack header block has more than {limit} fields")
            }
            HpackError::StringTooLong { len, limit } => {
                write!(f, "hpack string of {len} bytes exceeds limit {limit}")
            }
        }
    }
}

impl std::error::Error for HpackError {}

impl From<HuffmanError> for HpackError {
    fn from(e: HuffmanError) -> Self {
        HpackError::Huffman(e)
    }
}

/// Resource limits; input is untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest string literal, checked on both the encoded and the decoded length.
    pub max_string_len: usize,
    /// Largest header list, counted as RFC 9113 §6.5.2 does (name + value + 32 per field).
    pub max_header_list_size: usize,
    /// Most fields in one block.
    pub max_fields: usize,
    /// Largest dynamic table (RFC 7541 §4.1 size) kept in memory. A peer may allow up to
    /// 4 GiB; beyond this cap the oldest entries are dropped and the decoder turns partial.
    pub max_tracked_table_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_string_len: 64 * 1024,
            max_header_list_size: 256 * 1024,
            max_fields: 1024,
            max_tracked_table_size: 64 * 1024,
        }
    }
}

/// RFC 7541 §4.1: every entry costs its name and value lengths plus 32.
const ENTRY_OVERHEAD: usize = 32;
/// RFC 9113 §6.5.2 initial SETTINGS_HEADER_TABLE_SIZE.
const DEFAULT_TABLE_SIZE: usize = 4096;

#[derive(Debug, Clone)]
struct Entry {
    /// None when the name came from an entry we never saw.
    name: Option<Vec<u8>>,
    value: Vec<u8>,
    /// RFC 7541 §4.1 size; a lower bound when `name` is None.
    size: usize,
}

enum Lookup<'a> {
    Static(&'static [u8], &'static [u8]),
    Dynamic(&'a Entry),
    Unknown,
}

/// Stateful decoder for one direction of one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Known dynamic entries, newest first (RFC 7541 §2.3.3).
    entries: VecDeque<Entry>,
    /// Sum of `entries` sizes.
    size: usize,
    /// Current maximum table size (RFC 7541 §4.2). When `!max_size_exact` this is only an
    /// upper bound (the protocol limit): we missed the size updates that set it.
    max_size: usize,
    max_size_exact: bool,
    /// SETTINGS_HEADER_TABLE_SIZE as acknowledged by the encoder.
    limit: usize,
    /// Unseen entries may exist past `entries`.
    partial: bool,
    unknown_refs: u64,
    limits: Limits,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// Full knowledge: we saw the connection from its start. Dynamic table starts empty, max 4096.
    pub fn new() -> Self {
        Decoder {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            max_size_exact: true,
            limit: DEFAULT_TABLE_SIZE,
            partial: false,
            unknown_refs: 0,
            limits: Limits::default(),
        }
    }

    /// Partial knowledge: capture started mid-connection. The table may hold entries we never saw;
    /// they are necessarily the OLDEST entries (HPACK inserts at the front, evicts from the back).
    ///
    /// The current maximum table size is unknown too and is assumed to be the limit
    /// (4096 until [`Decoder::set_max_table_size_limit`] says otherwise); overestimating it
    /// only makes the decoder more lenient, never wrong.
    pub fn new_mid_connection() -> Self {
        let mut d = Self::new();
        d.mark_state_lost();
        d
    }

    /// Replace the default [`Limits`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.enforce_tracking_cap();
        self
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE as acknowledged: the upper bound for size updates
    /// the encoder may send (RFC 7541 §4.2, §6.3). Default 4096.
    ///
    /// Call it when the encoder's side acknowledges the setting: the encoder applies it
    /// before its next header block. A lower limit shrinks the table at once, since the
    /// encoder must shrink too before it references anything (RFC 7541 §4.2). A higher
    /// limit leaves an exactly known maximum alone (the encoder must signal growth), but
    /// raises an assumed one.
    pub fn set_max_table_size_limit(&mut self, n: usize) {
        self.limit = n;
        if !self.max_size_exact || self.max_size > n {
            self.max_size = n;
            self.evict_to(n);
            self.settle_partial();
        }
    }

    /// Declare that state was lost (e.g. a gap in the TCP stream swallowed a header block).
    ///
    /// All known entries are forgotten, not kept: an unseen block may have inserted entries
    /// in front of them, so their index positions are no longer known, and resolving an
    /// index to a stale entry would yield a wrong header instead of an unknown one. The
    /// maximum table size is assumed to be the limit, as a lost size update may have
    /// changed it. Afterwards the decoder behaves like [`Decoder::new_mid_connection`].
    pub fn mark_state_lost(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.partial = true;
        self.max_size = self.limit;
        self.max_size_exact = false;
        self.settle_partial();
    }

    /// Decode one complete header block (after CONTINUATION frames are joined).
    ///
    /// On a protocol error the decoder's state is marked lost (see
    /// [`Decoder::mark_state_lost`]): the peer would have torn the connection down, and our
    /// table no longer matches its table. On a [`Limits`] violation (`HeaderListTooLarge`,
    /// `TooManyFields`, `StringTooLong`) the whole block is still parsed so that the table
    /// stays in sync; only the output is dropped.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<HeaderField>, HpackError> {
        let mut out = HeaderBlock::default();
        self.decode_into(block, &mut out)?;
        Ok(out.to_fields())
    }

    /// [`Decoder::decode`] into a reused [`HeaderBlock`]: no allocation per field. On
    /// an error `out` is left empty.
    pub fn decode_into(&mut self, block: &[u8], out: &mut HeaderBlock) -> Result<(), HpackError> {
        let result = self.decode_block(block, out);
        if let Err(e) = &result {
            out.clear();
            if !e.is_limit() {
                self.mark_state_lost();
            }
        }
        result
    }

    /// Number of fields decoded with an unknown name or value since creation (for statistics).
    pub fn unknown_refs(&self) -> u64 {
        self.unknown_refs
    }

    /// Bytes of KNOWN entries (RFC 7541 §4.1: name + value + 32). Entries whose name is
    /// unknown count their name as zero bytes.
    pub fn dynamic_table_size(&self) -> usize {
        self.size
    }

    /// Whether unseen entries may exist in the peer's table.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Current maximum dynamic table size (an upper bound while it is not known exactly).
    pub fn max_table_size(&self) -> usize {
        self.max_size
    }

    /// Number of known dynamic table entries.
    pub fn known_entries(&self) -> usize {
        self.entries.len()
    }

    fn decode_block(&mut self, block: &[u8], out: &mut HeaderBlock) -> Result<(), HpackError> {
        out.clear();
        let mut r = Reader { buf: block, pos: 0 };
        let mut sink = Sink {
            out,
            list_size: 0,
            overflow: None,
            limits: self.limits,
        };
        let mut seen_field = false;
        while let Some(first) = r.peek() {
            if first & 0x80 != 0 {
                // §6.1 Indexed Header Field.
                let index = r.int(7)?;
                let mut unknown = false;
                match self.lookup(index)? {
                    Lookup::Static(n, v) => {
                        if sink.admit(n.len(), v.len()) {
                            sink.out.push(Some(n), Some(v));
                        }
                    }
                    Lookup::Dynamic(e) => {
                        let name_len = e.name.as_ref().map_or(0, Vec::len);
                        unknown = e.name.is_none();
                        if sink.admit(name_len, e.value.len()) {
                            sink.out.push(e.name.as_deref(), Some(&e.value));
                        }
                    }
                    Lookup::Unknown => {
                        unknown = true;
                        if sink.admit(0, 0) {
                            sink.out.push(None, None);
                        }
                    }
                }
                if unknown {
                    self.unknown_refs += 1;
                }
            } else if first & 0xe0 == 0x20 {
                // §6.3 Dynamic Table Size Update: only before the first field (§4.2).
                if seen_field {
                    return Err(HpackError::SizeUpdateNotAtStart);
                }
                let n = r.int(5)?;
                self.size_update(n)?;
                continue;
            } else {
                // §6.2.1 (01), §6.2.2 (0000) and §6.2.3 (0001) literals. Name and
                // value are decoded straight into the block's buffer, then kept
                // or cut off again.
                let indexing = first & 0xc0 == 0x40;
                let index = r.int(if indexing { 6 } else { 4 })?;
                let mark = sink.out.bytes.len();
                let name = if index == 0 {
                    match read_string(&mut r, &mut sink)? {
                        Some(range) => Name::Known(range),
                        None => Name::Skipped,
                    }
                } else {
                    let n = match self.lookup(index)? {
                        Lookup::Static(n, _) => Some(n),
                        Lookup::Dynamic(Entry { name: Some(n), .. }) => Some(&n[..]),
                        Lookup::Dynamic(Entry { name: None, .. }) | Lookup::Unknown => None,
                    };
                    match n {
                        Some(n) => Name::Known(sink.out.append(n)),
                        None => Name::Unknown,
                    }
                };
                let value = read_string(&mut r, &mut sink)?;
                let (name, value) = match (name, value) {
                    (Name::Known(n), Some(v)) => (Some(n), v),
                    (Name::Unknown, Some(v)) => {
                        self.unknown_refs += 1;
                        (None, v)
                    }
                    _ => {
                        sink.out.bytes.truncate(mark);
                        // A string was too long to keep, so the entry this literal adds to
                        // the peer's table cannot be mirrored: its position is now unknown.
                        if indexing {
                            self.forget_entries();
                        }
                        seen_field = true;
                        continue;
                    }
                };
                let name_len = name.as_ref().map_or(0, |n| n.1 - n.0);
                if indexing {
                    let bytes = &sink.out.bytes;
                    self.insert(
                        name.map(|n| bytes[n.0..n.1].to_vec()),
                        bytes[value.0..value.1].to_vec(),
                    );
                }
                if sink.admit(name_len, value.1 - value.0) {
                    sink.out.fields.push(Span {
                        name,
                        value: Some(value),
                    });
                } else {
                    sink.out.bytes.truncate(mark);
                }
            }
            seen_field = true;
        }
        match sink.overflow {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// RFC 7541 §2.3.3 index address space.
    fn lookup(&self, index: usize) -> Result<Lookup<'_>, HpackError> {
        if index == 0 {
            return Err(HpackError::InvalidIndex(0));
        }
        if let Some(&(n, v)) = STATIC_TABLE.get(index - 1) {
            return Ok(Lookup::Static(n, v));
        }
        let pos = index - STATIC_TABLE.len() - 1;
        if let Some(e) = self.entries.get(pos) {
            return Ok(Lookup::Dynamic(e));
        }
        // Unseen entries sit behind the known ones and each takes at least 32 bytes of
        // what the known entries leave free, which bounds how many there can be.
        if self.partial {
            let max_unseen = self.max_size.saturating_sub(self.size) / ENTRY_OVERHEAD;
            if pos - self.entries.len() < max_unseen {
                return Ok(Lookup::Unknown);
            }
        }
        Err(HpackError::InvalidIndex(index))
    }

    /// RFC 7541 §6.3 / §4.3.
    fn size_update(&mut self, n: usize) -> Result<(), HpackError> {
        if n > self.limit {
            return Err(HpackError::SizeUpdateTooLarge {
                requested: n,
                limit: self.limit,
            });
        }
        self.max_size = n;
        self.max_size_exact = true;
        self.evict_to(n);
        self.settle_partial();
        Ok(())
    }

    /// RFC 7541 §4.4.
    fn insert(&mut self, name: Option<Vec<u8>>, value: Vec<u8>) {
        let size = name.as_ref().map_or(0, Vec::len) + value.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // Too large for the table: the table ends up empty, unseen entries included.
            self.entries.clear();
            self.size = 0;
            self.partial = false;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front(Entry { name, value, size });
        self.size += size;
        self.enforce_tracking_cap();
        self.settle_partial();
    }

    /// Evict oldest entries until the table fits in `target` bytes (RFC 7541 §4.3, §4.4).
    fn evict_to(&mut self, target: usize) {
        let mut evicted = false;
        while self.size > target {
            let Some(e) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= e.size;
            evicted = true;
        }
        // Eviction is oldest-first, and our sizes and maximum never overstate the peer's,
        // so once a known entry goes, every unseen (older) entry is gone as well.
        if evicted {
            self.partial = false;
        }
    }

    /// Less than one minimal entry of room left means no unseen entry can exist.
    fn settle_partial(&mut self) {
        if self.partial && self.max_size.saturating_sub(self.size) < ENTRY_OVERHEAD {
            self.partial = false;
        }
    }

    /// Memory cap: dropping entries the peer still holds makes their positions unknown.
    fn enforce_tracking_cap(&mut self) {
        while self.size > self.limits.max_tracked_table_size {
            let Some(e) = self.entries.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= e.size;
            self.partial = true;
        }
    }

    /// Forget every known entry but keep the (still valid) maximum size.
    fn forget_entries(&mut self) {
        self.entries.clear();
        self.size = 0;
        self.partial = true;
    }
}

enum Name {
    /// Its bytes in the output buffer.
    Known((usize, usize)),
    /// From an entry we never saw.
    Unknown,
    /// Literal name over `max_string_len`; the field is dropped.
    Skipped,
}

/// Collects output fields and enforces the output limits without stopping the parse.
struct Sink<'o> {
    out: &'o mut HeaderBlock,
    list_size: usize,
    overflow: Option<HpackError>,
    limits: Limits,
}

impl Sink<'_> {
    /// Whether a field of this size may be emitted; the first violation is remembered and
    /// stops all further output (so nothing more is allocated for it).
    fn admit(&mut self, name_len: usize, value_len: usize) -> bool {
        if self.overflow.is_some() {
            return false;
        }
        let size = name_len
            .saturating_add(value_len)
            .saturating_add(ENTRY_OVERHEAD);
        if self.out.fields.len() >= self.limits.max_fields {
            self.overflow = Some(HpackError::TooManyFields {
                limit: self.limits.max_fields,
            });
            false
        } else if size > self.limits.max_header_list_size - self.list_size {
            self.overflow = Some(HpackError::HeaderListTooLarge {
                limit: self.limits.max_header_list_size,
            });
            false
        } else {
            self.list_size += size;
            true
        }
    }

    fn too_long(&mut self, len: usize) {
        if self.overflow.is_none() {
            self.overflow = Some(HpackError::StringTooLong {
                len,
                limit: self.limits.max_string_len,
            });
        }
    }
}

/// RFC 7541 §5.2 string literal, appended to the output buffer; returns its range
/// there. `Ok(None)`: well-formed but over `max_string_len`; its bytes are skipped,
/// nothing is appended and the violation is recorded in `sink`.
fn read_string(
    r: &mut Reader<'_>,
    sink: &mut Sink<'_>,
) -> Result<Option<(usize, usize)>, HpackError> {
    let huffman_coded = r.peek().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = r.int(7)?;
    let raw = r.take(len)?;
    let max = sink.limits.max_string_len;
    if len > max {
        sink.too_long(len);
        return Ok(None);
    }
    if !huffman_coded {
        return Ok(Some(sink.out.append(raw)));
    }
    let buf = &mut sink.out.bytes;
    let start = buf.len();
    huffman::decode(raw, buf)?;
    if buf.len() - start > max {
        let n = buf.len() - start;
        buf.truncate(start);
        sink.too_long(n);
        return Ok(None);
    }
    Ok(Some((start, buf.len())))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn byte(&mut self) -> Result<u8, HpackError> {
        let b = self.peek().ok_or(HpackError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HpackError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let s = rest.get(..n).ok_or(HpackError::Truncated)?;
        self.pos += n;
        Ok(s)
    }

    /// RFC 7541 §5.1 integer with an N-bit prefix (1..=8). Five continuation bytes carry
    /// 35 bits, enough for any u32; longer encodings or larger values are rejected so a
    /// hostile length can never wrap or drive a huge allocation.
    fn int(&mut self, prefix_bits: u32) -> Result<usize, HpackError> {
        let mask = (1u32 << prefix_bits) - 1;
        let first = u32::from(self.byte()?) & mask;
        if first < mask {
            return Ok(first as usize);
        }
        let mut value = u64::from(first);
        for shift in [0u32, 7, 14, 21, 28] {
            let b = self.byte()?;
            value += u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return u32::try_from(value)
                    .ok()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or(HpackError::IntegerOverflow);
            }
        }
        Err(HpackError::IntegerOverflow)
    }
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn f(name: &str, value: &str) -> HeaderField {
        HeaderField {
            name: Some(name.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn fields(list: &[(&str, &str)]) -> Vec<HeaderField> {
        list.iter().map(|&(n, v)| f(n, v)).collect()
    }

    /// Known table contents, newest first; unknown names shown as "?".
    fn table(d: &Decoder) -> Vec<(String, String)> {
        d.entries
            .iter()
            .map(|e| {
                let n = e
                    .name
                    .as_deref()
                    .map_or("?".into(), |n| String::from_utf8_lossy(n).into_owned());
                (n, String::from_utf8_lossy(&e.value).into_owned())
            })
            .collect()
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// RFC 7541 §5.1 encoder for building test blocks.
    fn enc_int(out: &mut Vec<u8>, prefix_bits: u32, flags: u8, value: usize) {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    fn enc_str(out: &mut Vec<u8>, s: &[u8], huffman_coded: bool) {
        if huffman_coded {
            let h = huffman::encode(s);
            enc_int(out, 7, 0x80, h.len());
            out.extend_from_slice(&h);
        } else {
            enc_int(out, 7, 0, s.len());
            out.extend_from_slice(s);
        }
    }

    /// Literal with incremental indexing and a literal name (§6.2.1).
    fn lit_inc(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x40);
        enc_str(out, name, false);
        enc_str(out, value, false);
    }

    fn int_of(bytes: &[u8], prefix_bits: u32) -> Result<usize, HpackError> {
        Reader { buf: bytes, pos: 0 }.int(prefix_bits)
    }

    fn check_invariants(d: &Decoder) {
        assert_eq!(d.size, d.entries.iter().map(|e| e.size).sum::<usize>());
        assert!(d.size <= d.max_size);
        assert!(d.size <= d.limits.max_tracked_table_size);
        assert!(d.max_size <= d.limit);
    }

    #[test]
    fn c1_integer_representation() {
        // C.1.1: 10 with a 5-bit prefix; the 3 high bits belong to the caller.
        assert_eq!(int_of(&[0b0000_1010], 5), Ok(10));
        assert_eq!(int_of(&[0b1110_1010], 5), Ok(10));
        // C.1.2: 1337 with a 5-bit prefix.
        assert_eq!(int_of(&[0x1f, 0x9a, 0x0a], 5), Ok(1337));
        // C.1.3: 42 at an octet boundary.
        assert_eq!(int_of(&[0x2a], 8), Ok(42));
        // Exactly the prefix maximum needs a zero continuation byte.
        assert_eq!(int_of(&[0x1f, 0x00], 5), Ok(31));
        assert_eq!(int_of(&[0x1f], 5), Err(HpackError::Truncated));
        assert_eq!(int_of(&[0x1f, 0x80], 5), Err(HpackError::Truncated));
        assert_eq!(int_of(&[], 5), Err(HpackError::Truncated));
        // Largest accepted and first rejected values around u32::MAX.
        let mut max = Vec::new();
        enc_int(&mut max, 5, 0, u32::MAX as usize);
        assert_eq!(int_of(&max, 5), Ok(u32::MAX as usize));
        let over = [0x1f, 0xe1, 0xff, 0xff, 0xff, 0x0f];
        assert_eq!(int_of(&over, 5), Err(HpackError::IntegerOverflow));
        // Six continuation bytes are rejected even when the value is small.
        let long = [0x1f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(int_of(&long, 5), Err(HpackError::IntegerOverflow));
        // Round trips.
        for v in [0usize, 1, 30, 31, 32, 127, 128, 255, 256, 16_383, 1 << 20] {
            for prefix in 1..=8 {
                let mut b = Vec::new();
                enc_int(&mut b, prefix, 0, v);
                assert_eq!(int_of(&b, prefix), Ok(v), "{v} prefix {prefix}");
            }
        }
    }

    #[test]
    fn c2_1_literal_with_indexing() {
        let mut d = Decoder::new();
        let out = d
            .decode(&hex("400a637573746f6d2d6b65790d637573746f6d2d686561646572"))
            .expect("decode");
        assert_eq!(out, fields(&[("custom-key", "custom-header")]));
        assert_eq!(d.dynamic_table_size(), 55);
        assert_eq!(table(&d), owned(&[("custom-key", "custom-header")]));
    }

    #[test]
    fn c2_2_literal_without_indexing() {
        let mut d = Decoder::new();
        let out = d
            .decode(&hex("040c2f73616d706c652f70617468"))
            .expect("decode");
        assert_eq!(out, fields(&[(":path", "/sample/path")]));
        assert_eq!(d.dynamic_table_size(), 0);
    }

    #[test]
    fn c2_3_literal_never_indexed() {
        let mut d = Decoder::new();
        let out = d
            .decode(&hex("100870617373776f726406736563726574"))
            .expect("decode");
        assert_eq!(out, fields(&[("password", "secret")]));
        assert_eq!(d.dynamic_table_size(), 0);
    }

    #[test]
    fn c2_4_indexed() {
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(&[0x82]).expect("decode"),
            fields(&[(":method", "GET")])
        );
        assert_eq!(d.dynamic_table_size(), 0);
    }

    fn run_requests(blocks: [&str; 3]) {
        let mut d = Decoder::new();
        let base = [(":method", "GET"), (":scheme", "http"), (":path", "/")];
        let auth = (":authority", "www.example.com");

        let out = d.decode(&hex(blocks[0])).expect("decode");
        assert_eq!(out, fields(&[base[0], base[1], base[2], auth]));
        assert_eq!(table(&d), owned(&[auth]));
        assert_eq!(d.dynamic_table_size(), 57);

        let out = d.decode(&hex(blocks[1])).expect("decode");
        let cc = ("cache-control", "no-cache");
        assert_eq!(out, fields(&[base[0], base[1], base[2], auth, cc]));
        assert_eq!(table(&d), owned(&[cc, auth]));
        assert_eq!(d.dynamic_table_size(), 110);

        let out = d.decode(&hex(blocks[2])).expect("decode");
        let ck = ("custom-key", "custom-value");
        let expected = [
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            auth,
            ck,
        ];
        assert_eq!(out, fields(&expected));
        assert_eq!(table(&d), owned(&[ck, cc, auth]));
        assert_eq!(d.dynamic_table_size(), 164);
        assert_eq!(d.unknown_refs(), 0);
        assert!(!d.is_partial());
    }

    #[test]
    fn c3_requests_without_huffman() {
        run_requests([
            "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
            "8286 84be 5808 6e6f 2d63 6163 6865",
            "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
        ]);
    }

    #[test]
    fn c4_requests_with_huffman() {
        run_requests([
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]);
    }

    fn run_responses(blocks: [&str; 3]) {
        let mut d = Decoder::new();
        // RFC 7541 C.5/C.6 use a 256-byte table.
        d.set_max_table_size_limit(256);
        assert_eq!(d.max_table_size(), 256);
        let cc = ("cache-control", "private");
        let date1 = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
        let loc = ("location", "https://www.example.com");

        let out = d.decode(&hex(blocks[0])).expect("decode");
        let s302 = (":status", "302");
        assert_eq!(out, fields(&[s302, cc, date1, loc]));
        assert_eq!(table(&d), owned(&[loc, date1, cc, s302]));
        assert_eq!(d.dynamic_table_size(), 222);

        // ":status: 307" evicts ":status: 302".
        let out = d.decode(&hex(blocks[1])).expect("decode");
        let s307 = (":status", "307");
        assert_eq!(out, fields(&[s307, cc, date1, loc]));
        assert_eq!(table(&d), owned(&[s307, loc, date1, cc]));
        assert_eq!(d.dynamic_table_size(), 222);

        let out = d.decode(&hex(blocks[2])).expect("decode");
        let date2 = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
        let gz = ("content-encoding", "gzip");
        let cookie = (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        );
        assert_eq!(
            out,
            fields(&[(":status", "200"), cc, date2, loc, gz, cookie])
        );
        assert_eq!(table(&d), owned(&[cookie, gz, date2]));
        assert_eq!(d.dynamic_table_size(), 215);
        assert!(!d.is_partial());
    }

    #[test]
    fn c5_responses_without_huffman() {
        run_responses([
            "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230
             3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65
             7861 6d70 6c65 2e63 6f6d",
            "4803 3330 37c1 c0bf",
            "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220
             474d 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157
             454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076
             6572 7369 6f6e 3d31",
        ]);
    }

    #[test]
    fn c6_responses_with_huffman() {
        run_responses([
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0
             82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            "4883 640e ffc1 c0bf",
            "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b
             d9ab 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27
             0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
        ]);
    }

    #[test]
    fn eviction_keeps_newest_entries() {
        let mut d = Decoder::new();
        d.set_max_table_size_limit(100);
        let mut b = Vec::new();
        lit_inc(&mut b, b"a", b"1"); // 34 bytes
        lit_inc(&mut b, b"b", b"2");
        lit_inc(&mut b, b"c", b"3"); // 102 > 100: "a" goes
        d.decode(&b).expect("decode");
        assert_eq!(table(&d), owned(&[("c", "3"), ("b", "2")]));
        assert_eq!(d.dynamic_table_size(), 68);
        assert_eq!(d.decode(&[0xbf]).expect("decode"), fields(&[("b", "2")]));
        assert_eq!(d.decode(&[0xc0]), Err(HpackError::InvalidIndex(64)));
    }

    #[test]
    fn entry_larger_than_table_empties_it() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        lit_inc(&mut b, b"a", b"1");
        lit_inc(&mut b, b"big", &[b'x'; 5000]);
        let out = d.decode(&b).expect("decode");
        assert_eq!(out.len(), 2);
        assert_eq!(d.dynamic_table_size(), 0);
        assert_eq!(d.known_entries(), 0);
    }

    #[test]
    fn size_update_zero_clears_table() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        lit_inc(&mut b, b"a", b"1");
        d.decode(&b).expect("decode");
        assert_eq!(d.dynamic_table_size(), 34);
        assert_eq!(d.decode(&[0x20]).expect("decode"), vec![]);
        assert_eq!(d.dynamic_table_size(), 0);
        assert_eq!(d.max_table_size(), 0);
        // Size 0 means nothing can be inserted either.
        d.decode(&b).expect("decode");
        assert_eq!(d.dynamic_table_size(), 0);
        // Back to 4096 (0x3f 0xe1 0x1f), then insertion works again.
        let mut b2 = vec![0x3f, 0xe1, 0x1f];
        lit_inc(&mut b2, b"a", b"1");
        d.decode(&b2).expect("decode");
        assert_eq!(d.max_table_size(), 4096);
        assert_eq!(d.decode(&[0xbe]).expect("decode"), fields(&[("a", "1")]));
    }

    #[test]
    fn size_update_above_limit_rejected() {
        let mut d = Decoder::new();
        // 4097 = 31 + 0x62 + (0x1f << 7).
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f]),
            Err(HpackError::SizeUpdateTooLarge {
                requested: 4097,
                limit: 4096
            })
        );
        // A protocol error desynchronises us from the peer.
        assert!(d.is_partial());

        let mut d = Decoder::new();
        d.set_max_table_size_limit(8192);
        assert_eq!(d.max_table_size(), 4096, "growth must be signalled");
        d.decode(&[0x3f, 0xe2, 0x1f]).expect("decode");
        assert_eq!(d.max_table_size(), 4097);
    }

    #[test]
    fn size_update_must_start_block() {
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(&[0x82, 0x20]),
            Err(HpackError::SizeUpdateNotAtStart)
        );
        // Two updates at the start are fine (RFC 7541 §4.2).
        let mut d = Decoder::new();
        let out = d.decode(&[0x20, 0x3f, 0xe1, 0x1f, 0x82]).expect("decode");
        assert_eq!(out, fields(&[(":method", "GET")]));
        assert_eq!(d.max_table_size(), 4096);
    }

    #[test]
    fn lowering_limit_shrinks_table() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        lit_inc(&mut b, b"a", b"1");
        lit_inc(&mut b, b"b", b"2");
        d.decode(&b).expect("decode");
        d.set_max_table_size_limit(40);
        assert_eq!(d.max_table_size(), 40);
        assert_eq!(table(&d), owned(&[("b", "2")]));
        assert!(!d.is_partial());
    }

    #[test]
    fn invalid_indices_in_full_mode() {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&[0x80]), Err(HpackError::InvalidIndex(0)));
        let mut d = Decoder::new();
        assert_eq!(d.decode(&[0xbe]), Err(HpackError::InvalidIndex(62)));
        let mut d = Decoder::new();
        // Literal with an indexed name past the table.
        assert_eq!(
            d.decode(&[0x7e, 0x01, b'v']),
            Err(HpackError::InvalidIndex(62))
        );
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(&[0xbd]).expect("decode"),
            fields(&[("www-authenticate", "")])
        );
    }

    #[test]
    fn malformed_blocks() {
        let cases: [(&[u8], HpackError); 7] = [
            (&[0x40, 0x05, b'a'], HpackError::Truncated),
            (&[0x40, 0x01, b'a', 0x03, b'b'], HpackError::Truncated),
            (&[0x40, 0x01, b'a'], HpackError::Truncated),
            (&[0x40], HpackError::Truncated),
            (&[0xff], HpackError::Truncated),
            (
                &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
                HpackError::IntegerOverflow,
            ),
            // Huffman name "a" with zero padding.
            (
                &[0x00, 0x81, 0x1e, 0x00],
                HpackError::Huffman(HuffmanError::InvalidPadding),
            ),
        ];
        for (block, err) in cases {
            let mut d = Decoder::new();
            assert_eq!(d.decode(block), Err(err), "{block:02x?}");
        }
        let mut d = Decoder::new();
        assert_eq!(d.decode(&[]).expect("decode"), vec![]);
        // Huffman string containing EOS.
        let block = [0x00, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            d.decode(&block),
            Err(HpackError::Huffman(HuffmanError::EosInString))
        );
    }

    #[test]
    fn partial_unseen_reference_is_none() {
        let mut d = Decoder::new_mid_connection();
        assert!(d.is_partial());
        assert_eq!(
            d.decode(&[0x82, 0xbe]).expect("decode"),
            vec![
                f(":method", "GET"),
                HeaderField {
                    name: None,
                    value: None
                }
            ]
        );
        assert_eq!(d.unknown_refs(), 1);
        // Literal with an unseen name: the value is still known.
        assert_eq!(
            d.decode(&[0x0f, 0x2f, 0x01, b'v']).expect("decode"),
            vec![HeaderField {
                name: None,
                value: Some(b"v".to_vec())
            }]
        );
        assert_eq!(d.unknown_refs(), 2);
        assert_eq!(d.dynamic_table_size(), 0);
    }

    #[test]
    fn partial_insert_then_reference() {
        let mut d = Decoder::new_mid_connection();
        let mut b = Vec::new();
        lit_inc(&mut b, b"k", b"v");
        // Incremental indexing, name index 63: after "k: v" went in, that is the first
        // slot past the known entries, i.e. an unseen entry.
        b.extend_from_slice(&[0x7f, 0x00, 0x01, b'w']);
        let out = d.decode(&b).expect("decode");
        assert_eq!(
            out,
            vec![
                f("k", "v"),
                HeaderField {
                    name: None,
                    value: Some(b"w".to_vec())
                }
            ]
        );
        // Unknown names count as zero bytes.
        assert_eq!(d.dynamic_table_size(), 34 + 33);
        assert_eq!(table(&d), owned(&[("?", "w"), ("k", "v")]));
        let out = d.decode(&[0xbe, 0xbf, 0xc0]).expect("decode");
        assert_eq!(
            out,
            vec![
                HeaderField {
                    name: None,
                    value: Some(b"w".to_vec())
                },
                f("k", "v"),
                HeaderField {
                    name: None,
                    value: None
                },
            ]
        );
        assert_eq!(d.unknown_refs(), 3);
        assert!(d.is_partial());
    }

    #[test]
    fn partial_index_bound() {
        // Empty known table, max 4096: at most 128 unseen entries, indices 62..=189.
        let mut d = Decoder::new_mid_connection();
        assert_eq!(d.decode(&[0xff, 0x3e]).expect("decode")[0].name, None);
        assert_eq!(d.decode(&[0xff, 0x3f]), Err(HpackError::InvalidIndex(190)));
        // The bound shrinks as known entries take room.
        let mut d = Decoder::new_mid_connection();
        d.set_max_table_size_limit(200);
        let mut b = Vec::new();
        lit_inc(&mut b, b"k", &[b'v'; 67]); // 100 bytes: room for 3 unseen
        d.decode(&b).expect("decode");
        assert_eq!(d.decode(&[0xc1]).expect("decode")[0].value, None);
        assert_eq!(d.decode(&[0xc2]), Err(HpackError::InvalidIndex(66)));
    }

    #[test]
    fn partial_eviction_of_known_entries() {
        let mut d = Decoder::new_mid_connection();
        let mut b = Vec::new();
        for name in [b"a", b"b", b"c", b"d"] {
            lit_inc(&mut b, name, &[b'x'; 967]); // 1000 bytes each
        }
        d.decode(&b).expect("decode");
        assert_eq!(d.dynamic_table_size(), 4000);
        assert!(d.is_partial());
        // 96 bytes left: up to 3 unseen entries behind the 4 known ones.
        assert_eq!(d.decode(&[0xc4]).expect("decode")[0].name, None);
        assert_eq!(d.decode(&[0xc5]), Err(HpackError::InvalidIndex(69)));

        let mut d = Decoder::new_mid_connection();
        d.decode(&b).expect("decode");
        let mut b = Vec::new();
        lit_inc(&mut b, b"e", &[b'x'; 967]);
        d.decode(&b).expect("decode");
        // Evicting a known entry proves every unseen (older) one is gone.
        assert!(!d.is_partial());
        let names: Vec<String> = table(&d).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["e", "d", "c", "b"]);
        assert_eq!(d.decode(&[0xc2]), Err(HpackError::InvalidIndex(66)));
    }

    #[test]
    fn partial_size_update_zero_gives_full_knowledge() {
        let mut d = Decoder::new_mid_connection();
        d.decode(&[0x20]).expect("decode");
        assert!(!d.is_partial());
        assert_eq!(d.decode(&[0xbe]), Err(HpackError::InvalidIndex(62)));
    }

    #[test]
    fn partial_limit_tracks_settings() {
        let mut d = Decoder::new_mid_connection();
        d.set_max_table_size_limit(65536);
        // Unknown current size: assume the limit, so 2048 unseen entries may exist.
        assert_eq!(d.max_table_size(), 65536);
        let mut b = Vec::new();
        enc_int(&mut b, 7, 0x80, 62 + 2047);
        assert_eq!(d.decode(&b).expect("decode")[0].name, None);
        // Once a size update was seen the maximum is exact.
        d.decode(&[0x3f, 0xe1, 0x1f]).expect("decode");
        assert_eq!(d.max_table_size(), 4096);
        assert_eq!(d.decode(&b), Err(HpackError::InvalidIndex(62 + 2047)));
    }

    #[test]
    fn state_lost_forgets_entries() {
        let mut d = Decoder::new();
        let mut b = Vec::new();
        lit_inc(&mut b, b"k", b"v");
        d.decode(&b).expect("decode");
        d.mark_state_lost();
        assert!(d.is_partial());
        assert_eq!(d.dynamic_table_size(), 0);
        let out = d.decode(&[0xbe]).expect("decode");
        assert_eq!(
            out,
            vec![HeaderField {
                name: None,
                value: None
            }]
        );
        // Decoding continues normally from there.
        d.decode(&b).expect("decode");
        assert_eq!(d.decode(&[0xbe]).expect("decode"), fields(&[("k", "v")]));
    }

    #[test]
    fn header_list_limit_keeps_table_in_sync() {
        let limits = Limits {
            max_header_list_size: 100,
            ..Limits::default()
        };
        let mut d = Decoder::new().with_limits(limits);
        let mut b = Vec::new();
        lit_inc(&mut b, b"a", b"b"); // 34
        lit_inc(&mut b, b"c", &[b'd'; 60]); // 93: over the limit
        lit_inc(&mut b, b"e", b"f"); // still inserted
        assert_eq!(
            d.decode(&b),
            Err(HpackError::HeaderListTooLarge { limit: 100 })
        );
        assert!(!d.is_partial());
        assert_eq!(d.known_entries(), 3);
        assert_eq!(
            d.decode(&[0xbe, 0xc0]).expect("decode"),
            fields(&[("e", "f"), ("a", "b")])
        );
    }

    #[test]
    fn too_many_fields() {
        let limits = Limits {
            max_fields: 2,
            ..Limits::default()
        };
        let mut d = Decoder::new().with_limits(limits);
        assert_eq!(
            d.decode(&[0x82, 0x86, 0x84]),
            Err(HpackError::TooManyFields { limit: 2 })
        );
        assert!(!d.is_partial());
        assert_eq!(d.decode(&[0x82, 0x86]).expect("decode").len(), 2);
    }

    #[test]
    fn string_too_long() {
        let limits = Limits {
            max_string_len: 4,
            ..Limits::default()
        };
        let mut d = Decoder::new().with_limits(limits);
        let mut b = vec![0x00];
        enc_str(&mut b, b"k", false);
        enc_str(&mut b, b"toolong", false);
        assert_eq!(
            d.decode(&b),
            Err(HpackError::StringTooLong { len: 7, limit: 4 })
        );
        assert!(!d.is_partial(), "not indexed: table unaffected");
        // Huffman: 4 encoded bytes, 6 decoded.
        let mut b = vec![0x00];
        enc_str(&mut b, b"k", false);
        enc_str(&mut b, b"aaaaaa", true);
        assert_eq!(
            d.decode(&b),
            Err(HpackError::StringTooLong { len: 6, limit: 4 })
        );
        // Indexed: the peer's table gained an entry we could not keep.
        let mut b = Vec::new();
        lit_inc(&mut b, b"k", b"toolong");
        lit_inc(&mut b, b"x", b"y");
        assert!(d.decode(&b).is_err());
        assert!(d.is_partial());
        assert_eq!(
            d.decode(&[0xbe, 0xbf]).expect("decode"),
            vec![
                f("x", "y"),
                HeaderField {
                    name: None,
                    value: None
                }
            ]
        );
    }

    #[test]
    fn tracking_cap_turns_partial() {
        let limits = Limits {
            max_tracked_table_size: 100,
            ..Limits::default()
        };
        let mut d = Decoder::new().with_limits(limits);
        let mut b = Vec::new();
        for name in [b"a", b"b", b"c"] {
            lit_inc(&mut b, name, b"1");
        }
        d.decode(&b).expect("decode");
        assert!(d.is_partial());
        assert_eq!(d.dynamic_table_size(), 68);
        let out = d.decode(&[0xbe, 0xbf, 0xc0]).expect("decode");
        assert_eq!(out[0], f("c", "1"));
        assert_eq!(out[1], f("b", "1"));
        assert_eq!(out[2].name, None);
    }

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn random_blocks_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let seeds: Vec<Vec<u8>> = [
            "828684418cf1e3c2e5f23a6ba0ab90f4ff",
            "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
            "4883640effc1c0bf",
            "400a637573746f6d2d6b65790d637573746f6d2d686561646572",
        ]
        .iter()
        .map(|s| hex(s))
        .collect();
        let small = Limits {
            max_string_len: 64,
            max_header_list_size: 512,
            max_fields: 16,
            max_tracked_table_size: 300,
        };
        let mut decoders = [
            Decoder::new(),
            Decoder::new_mid_connection(),
            Decoder::new().with_limits(small),
            Decoder::new_mid_connection().with_limits(small),
        ];
        for round in 0..200_000 {
            let r = xorshift(&mut x);
            let block: Vec<u8> = if r % 3 == 0 {
                // Mutated valid block.
                let mut b = seeds[(r >> 8) as usize % seeds.len()].clone();
                for _ in 0..1 + (r >> 16) % 4 {
                    let i = xorshift(&mut x) as usize % b.len();
                    b[i] ^= 1 << (xorshift(&mut x) % 8);
                }
                b.truncate(b.len() - (r >> 24) as usize % 3);
                b
            } else {
                let len = (r >> 8) as usize % 48;
                (0..len).map(|_| xorshift(&mut x) as u8).collect()
            };
            for d in decoders.iter_mut() {
                if let Ok(out) = d.decode(&block) {
                    assert!(out.len() <= block.len());
                }
                check_invariants(d);
            }
            if round % 1000 == 0 {
                decoders[0].set_max_table_size_limit((r >> 32) as usize % 8192);
                decoders[1].mark_state_lost();
            }
        }
    }

    /// A gRPC unary request as sent by a typical client: static-table indices plus
    /// Huffman-coded literals without indexing (so the table does not change).
    fn grpc_request_block() -> Vec<u8> {
        let mut b = vec![0x83, 0x86]; // :method POST, :scheme http
        let indexed_name = [
            (4, &b"/tensorflow.serving.PredictionService/Predict"[..]),
            (1, b"localhost:8500"),
            (31, b"application/grpc"),
            (58, b"grpc-c++/1.62.1 grpc-c/39.0.0 (linux; chttp2)"),
        ];
        for (index, value) in indexed_name {
            enc_int(&mut b, 4, 0x00, index);
            enc_str(&mut b, value, true);
        }
        let literal = [
            (&b"te"[..], &b"trailers"[..]),
            (b"grpc-accept-encoding", b"identity,deflate,gzip"),
            (b"grpc-timeout", b"4999882u"),
        ];
        for (name, value) in literal {
            b.push(0x00);
            enc_str(&mut b, name, true);
            enc_str(&mut b, value, true);
        }
        b
    }

    #[test]
    fn grpc_request_decodes() {
        let mut d = Decoder::new();
        let out = d.decode(&grpc_request_block()).expect("decode");
        assert_eq!(out.len(), 9);
        assert_eq!(
            out[2],
            f(":path", "/tensorflow.serving.PredictionService/Predict")
        );
        assert_eq!(out[8], f("grpc-timeout", "4999882u"));
    }

    /// `cargo test --release -- --ignored --nocapture bench_grpc_request`
    #[test]
    #[ignore]
    fn bench_grpc_request() {
        let block = grpc_request_block();
        let mut d = Decoder::new();
        let n = 1_000_000u32;
        let start = std::time::Instant::now();
        let mut total = 0usize;
        for _ in 0..n {
            total +=
                std::hint::black_box(d.decode(std::hint::black_box(&block))).map_or(0, |v| v.len());
        }
        let elapsed = start.elapsed();
        assert_eq!(total, 9 * n as usize);
        println!(
            "{} bytes/block: {:.0} ns/block",
            block.len(),
            elapsed.as_nanos() as f64 / f64::from(n)
        );
    }
}
