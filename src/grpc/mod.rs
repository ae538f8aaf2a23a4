//! gRPC over HTTP/2: groups a connection's stream events into calls (request
//! headers + messages, response headers + messages + trailers), and reads the
//! status a call ended with.

pub mod message;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::http2::{Event, HeaderBlock};
use crate::net::Dir;
pub use message::{Deframer, Encoding, Limits as MessageLimits, Message};

/// Decoded header fields of one header block, as far as HPACK could tell.
#[derive(Debug, Clone, Default)]
pub struct HeaderList {
    /// Names and values of the known fields, back to back (one allocation for
    /// the block, not two per field).
    text: String,
    /// End offsets in `text` of each field's name and value; a name starts
    /// where the previous value ended.
    ends: Vec<(u32, u32)>,
    /// Per name of [`LOOKED_UP`]: 1 + the index of its first field (0: absent),
    /// found while the list is built, so each call's many lookups skip the scan.
    first: [u8; LOOKED_UP.len()],
    /// Names whose value referenced a dynamic-table entry never seen.
    pub unknown_values: Vec<String>,
    /// Fields whose name (and value) were never seen.
    pub unknown_fields: usize,
    /// Values of fields whose name alone was never seen (a literal with an
    /// HPACK-indexed name from before the capture).
    pub unnamed_values: Vec<String>,
    /// Fields not kept because the block exceeded the size kept per block.
    pub dropped_fields: usize,
    /// Why the block could not be decoded at all.
    pub error: Option<String>,
}

impl HeaderList {
    pub fn from_fields(fields: &HeaderBlock, error: Option<String>) -> HeaderList {
        if let Some(h) = Self::whole_block(fields) {
            return HeaderList { error, ..h }.index();
        }
        let mut h = HeaderList {
            error,
            ..HeaderList::default()
        };
        // HPACK lets a few bytes reference a large table entry many times;
        // an open call keeps its header lists, so they are capped (gRPC's own
        // servers reject more than 16 KiB of metadata).
        let mut kept = 0usize;
        let mut known = 0usize;
        for f in fields {
            let size = f.name.map_or(0, <[u8]>::len) + f.value.map_or(0, <[u8]>::len);
            if kept + size > MAX_HEADER_BYTES_KEPT {
                h.dropped_fields += 1;
                continue;
            }
            kept += size;
            match (f.name, f.value) {
                (Some(n), Some(v)) => {
                    if h.text.capacity() == 0 {
                        // Room for the whole block at once, lossy expansion aside.
                        h.text.reserve(kept_bytes(fields));
                        h.ends.reserve_exact(fields.len());
                    }
                    push_lossy(&mut h.text, n);
                    let name_end = h.text.len();
                    push_lossy(&mut h.text, v);
                    // `kept` bounds the text to a few times 16 KiB: offsets fit.
                    h.ends.push((name_end as u32, h.text.len() as u32));
                    known += 1;
                }
                (Some(n), None) => h.unknown_values.push(lossy(n)),
                (None, Some(v)) => {
                    h.unknown_fields += 1;
                    h.unnamed_values.push(lossy(v));
                }
                (None, None) => h.unknown_fields += 1,
            }
        }
        debug_assert_eq!(known, h.ends.len());
        h.index()
    }

    /// The usual block: every field known, under the cap, valid UTF-8. Its
    /// buffer already holds the fields back to back, so it is taken whole
    /// (checked once rather than field by field).
    fn whole_block(fields: &HeaderBlock) -> Option<HeaderList> {
        let bytes = fields.bytes();
        if bytes.len() > MAX_HEADER_BYTES_KEPT {
            return None;
        }
        let mut ends = Vec::with_capacity(fields.len());
        let mut at = 0usize;
        for (name, value) in fields.ranges() {
            let (name, value) = (name?, value?);
            if name.start != at || value.start != name.end {
                return None;
            }
            at = value.end;
            ends.push((name.end as u32, value.end as u32));
        }
        if at != bytes.len() {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        // A field must not end inside a character (its own text must be valid).
        if !ends
            .iter()
            .all(|&(n, v)| text.is_char_boundary(n as usize) && text.is_char_boundary(v as usize))
        {
            return None;
        }
        Some(HeaderList {
            text: text.to_owned(),
            ends,
            ..HeaderList::default()
        })
    }

    /// Whether this list is `fields` taken whole: its text is the block's
    /// bytes, nothing unknown or dropped.
    fn is_whole(&self, fields: &HeaderBlock) -> bool {
        self.text.len() == fields.bytes().len()
            && self.ends.len() == fields.len()
            && self.unknown_fields == 0
            && self.unknown_values.is_empty()
            && self.dropped_fields == 0
    }

    /// The known fields, in block order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(n, v)| {
            let (n, v) = (n as usize, v as usize);
            let field = (&self.text[start..n], &self.text[n..v]);
            start = v;
            field
        })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(slot) = LOOKED_UP.iter().position(|&n| n == name) {
            // Only the first 255 fields are indexed; past that, scan.
            return match self.first[slot] {
                0 if self.ends.len() >= 255 => self.scan(name),
                0 => None,
                i => self.field(usize::from(i) - 1).map(|(_, v)| v),
            };
        }
        self.scan(name)
    }

    fn scan(&self, name: &str) -> Option<&str> {
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn field(&self, i: usize) -> Option<(&str, &str)> {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1)?.1 as usize,
        };
        let (n, v) = *self.ends.get(i)?;
        Some((
            self.text.get(start..n as usize)?,
            self.text.get(n as usize..v as usize)?,
        ))
    }

    /// Fills `first` once the fields are in.
    fn index(mut self) -> HeaderList {
        let mut first = [0u8; LOOKED_UP.len()];
        for (i, (name, _)) in self.fields().enumerate().take(254) {
            if let Some(slot) = LOOKED_UP.iter().position(|&n| n == name) {
                if first[slot] == 0 {
                    first[slot] = i as u8 + 1;
                }
            }
        }
        self.first = first;
        self
    }

    /// Whether a field of this name might be among the unknown ones.
    pub fn maybe_unknown(&self, name: &str) -> bool {
        self.unknown_fields > 0
            || self.error.is_some()
            || self.unknown_values.iter().any(|n| n == name)
    }
}

/// Header names every call looks up, some several times.
const LOOKED_UP: [&str; 8] = [
    ":path",
    ":status",
    "content-type",
    "grpc-encoding",
    "grpc-message",
    "grpc-status",
    "x-request-id",
    "grpc-timeout",
];

/// Bytes of the known fields of a block that fit under the cap.
fn kept_bytes(fields: &HeaderBlock) -> usize {
    let mut kept = 0usize;
    for f in fields {
        if let (Some(n), Some(v)) = (f.name, f.value) {
            kept += n.len() + v.len();
        }
    }
    kept.min(MAX_HEADER_BYTES_KEPT)
}

/// Decoded header bytes kept per header block.
pub const MAX_HEADER_BYTES_KEPT: usize = 16 << 10;

/// Appends `b` as text; `from_utf8` checks ASCII a word at a time, where
/// `from_utf8_lossy` walks byte by byte even when nothing needs replacing.
fn push_lossy(s: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(t) => s.push_str(t),
        Err(_) => s.push_str(&String::from_utf8_lossy(b)),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server ended the stream (trailers or Trailers-Only).
    Completed,
    /// RST_STREAM from one side, with the HTTP/2 error code.
    Reset { by: Dir, code: u32 },
    /// The connection closed (or the capture ended) before the call did.
    ConnectionClosed,
    /// No activity on the stream for the idle timeout (live capture).
    Expired,
}

/// One gRPC call (one HTTP/2 stream), as seen on the wire.
#[derive(Debug)]
pub struct Call {
    pub conn: u64,
    pub stream: u32,
    /// Shared with the call table's recent lists (see `CallTable::recent`).
    pub request_headers: Option<Arc<HeaderList>>,
    pub response_headers: Option<Arc<HeaderList>>,
    pub trailers: Option<Arc<HeaderList>>,
    pub request: Deframer,
    pub response: Deframer,
    pub request_frames: Vec<u64>,
    pub response_frames: Vec<u64>,
    pub start_ts_ns: Option<i64>,
    pub end_ts_ns: Option<i64>,
    pub request_ended: bool,
    pub ending: Ending,
    /// Bytes of DATA payload the capture lost, per direction.
    pub lost_bytes: [u64; 2],
    /// Framing was lost in this connection direction while the call was open.
    pub desynced: [bool; 2],
    /// The server's GOAWAY said this stream was never processed.
    pub refused_by_goaway: bool,
    /// Framing of a direction was unknown when its first bytes were seen
    /// (the stream began before the capture, or after a loss).
    pub started_unframed: [bool; 2],
    /// Per direction: the stream is in `CallTable::desync_check` (bytes
    /// arrived since the last loss of framing was applied).
    desync_queued: [bool; 2],
}

impl Call {
    fn new(conn: u64, stream: u32, limits: MessageLimits) -> Call {
        Call {
            conn,
            stream,
            request_headers: None,
            response_headers: None,
            trailers: None,
            request: Deframer::new(limits),
            response: Deframer::new(limits),
            request_frames: Vec::new(),
            response_frames: Vec::new(),
            start_ts_ns: None,
            end_ts_ns: None,
            request_ended: false,
            ending: Ending::ConnectionClosed,
            lost_bytes: [0; 2],
            desynced: [false; 2],
            refused_by_goaway: false,
            started_unframed: [false; 2],
            desync_queued: [false; 2],
        }
    }

    fn note_frame(&mut self, dir: Dir, frame: u64, ts_ns: i64) {
        if frame == 0 {
            return;
        }
        let frames = match dir {
            Dir::ToServer => &mut self.request_frames,
            Dir::ToClient => &mut self.response_frames,
        };
        if frames.is_empty() {
            // Most calls fit a frame each way; `push` would reserve four.
            *frames = vec![frame];
        } else if frames.last() != Some(&frame) && frames.len() < MAX_FRAMES_LISTED {
            frames.push(frame);
        }
        if dir == Dir::ToServer && self.start_ts_ns.is_none() {
            self.start_ts_ns = Some(ts_ns);
        }
        self.end_ts_ns = Some(ts_ns);
    }

    /// The status the call ended with: from trailers, or from a Trailers-Only
    /// response (grpc-status in the only header block).
    pub fn status(&self) -> GrpcStatus {
        let from = |h: &Arc<HeaderList>| -> Option<GrpcStatus> {
            let text = h.get("grpc-status")?;
            let code = text.trim().parse().ok();
            Some(GrpcStatus {
                code,
                raw_code: if code.is_none() {
                    text.to_string()
                } else {
                    String::new()
                },
                message: h.get("grpc-message").map(percent_decode),
                message_inferred: false,
            })
        };
        let last = self.trailers.as_ref().or(self.response_headers.as_ref());
        let mut s = self
            .trailers
            .as_ref()
            .and_then(from)
            .or_else(|| self.response_headers.as_ref().and_then(from))
            .unwrap_or_default();
        if s.message.is_none() {
            s.message = last.and_then(|h| h.get("grpc-message")).map(percent_decode);
        }
        // grpc-core sends grpc-message as a literal whose *name* may be an
        // HPACK entry from before the capture: a single unnamed value in the
        // last header block that reads as text is taken as the message,
        // marked as inferred.
        if s.message.is_none() {
            if let Some(h) = last {
                let texts: Vec<&String> = h
                    .unnamed_values
                    .iter()
                    .filter(|v| v.len() > 3 && v.contains(' ') && !v.starts_with("application/"))
                    .collect();
                if let [only] = texts.as_slice() {
                    s.message = Some(percent_decode(only));
                    s.message_inferred = true;
                }
            }
        }
        s
    }

    /// `:status` of the response headers.
    pub fn http_status(&self) -> Option<u16> {
        self.response_headers
            .as_ref()
            .or(self.trailers.as_ref())
            .and_then(|h| h.get(":status"))
            .and_then(|s| s.parse().ok())
    }

    pub fn request_header(&self, name: &str) -> Option<&str> {
        self.request_headers.as_ref().and_then(|h| h.get(name))
    }
}

/// Keeps exchange records small for calls spread over thousands of packets.
const MAX_FRAMES_LISTED: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct GrpcStatus {
    pub code: Option<u32>,
    /// The grpc-status text when it is not a number (else empty).
    pub raw_code: String,
    pub message: Option<String>,
    /// The message's header name was not seen; see [`Call::status`].
    pub message_inferred: bool,
}

/// gRPC status code names (grpc doc/statuscodes.md).
pub fn code_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => return None,
    })
}

/// Decodes grpc-message percent-encoding leniently: malformed escapes stay as
/// they are, invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub messages: MessageLimits,
    /// Streams tracked at once per connection; more are counted, not decoded.
    pub max_open_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            messages: MessageLimits::default(),
            max_open_calls: 4096,
        }
    }
}

/// The calls of one HTTP/2 connection.
pub struct CallTable {
    conn: u64,
    /// Keyed with a per-process random seed: stream ids come from the capture.
    /// Boxed: a call is several hundred bytes, and the table's probing and
    /// growth move entries.
    open: HashMap<u32, Box<Call>, RandomState>,
    limits: Limits,
    pub untracked_streams: u64,
    pub goaway: Option<(Dir, u32, u32)>,
    /// After the server's first GOAWAY: odd streams (client-opened) not yet
    /// refused by one (a superset: closed streams linger until pruned). A
    /// later GOAWAY marks only those above its last stream, so repeated
    /// GOAWAYs no longer walk every open call.
    goaway_unmarked: Option<BTreeSet<u32>>,
    /// Per direction, streams that received bytes since the last loss of
    /// framing there (may hold stale ids): only they can have a message in
    /// progress, so a loss walks them instead of every open call.
    desync_check: [Vec<u32>; 2],
    /// Streams ever seen on this connection.
    pub calls_seen: u64,
    /// Per direction, header blocks seen lately with the list built from
    /// each, and when each was last used. Peers send the same few blocks
    /// call after call (a response's headers, OK trailers), and a list
    /// depends on its fields alone: a repeated block shares its list.
    recent: [Vec<Recent>; 2],
    /// Blocks looked up so far: the clock of `Recent::used`.
    lookups: u64,
}

struct Recent {
    fields: HeaderBlock,
    list: Arc<HeaderList>,
    used: u64,
}

/// Header blocks remembered per direction of a connection.
const RECENT_LISTS: usize = 3;
/// Largest block remembered, in field bytes and in fields: the blocks that
/// repeat are a few hundred bytes in a dozen fields. Only blocks taken whole
/// (text = field bytes, no unknown fields) are remembered, so one costs at
/// most its bytes twice plus 56 bytes a field (about 2 KiB), and a
/// connection's six about 12 KiB.
const RECENT_MAX_BYTES: usize = 512;
const RECENT_MAX_FIELDS: usize = 16;

impl CallTable {
    pub fn new(conn: u64, limits: Limits) -> Self {
        CallTable {
            conn,
            open: HashMap::default(),
            limits,
            untracked_streams: 0,
            goaway: None,
            goaway_unmarked: None,
            desync_check: [Vec::new(), Vec::new()],
            calls_seen: 0,
            recent: [Vec::new(), Vec::new()],
            lookups: 0,
        }
    }

    /// The header list of `fields`: a recent identical block's, or a new one,
    /// remembered in place of the least recently used when small.
    fn header_list(
        &mut self,
        dir: Dir,
        fields: &HeaderBlock,
        error: Option<String>,
    ) -> Arc<HeaderList> {
        if error.is_some()
            || fields.bytes().len() > RECENT_MAX_BYTES
            || fields.len() > RECENT_MAX_FIELDS
        {
            return Arc::new(HeaderList::from_fields(fields, error));
        }
        self.lookups += 1;
        let now = self.lookups;
        let recent = &mut self.recent[usize::from(dir == Dir::ToClient)];
        if let Some(r) = recent.iter_mut().find(|r| r.fields == *fields) {
            r.used = now;
            return Arc::clone(&r.list);
        }
        let list = Arc::new(HeaderList::from_fields(fields, None));
        if !list.is_whole(fields) {
            return list;
        }
        if recent.len() < RECENT_LISTS {
            recent.push(Recent {
                fields: fields.clone(),
                list: Arc::clone(&list),
                used: now,
            });
        } else if let Some(r) = recent.iter_mut().min_by_key(|r| r.used) {
            r.fields.copy_from(fields);
            r.list = Arc::clone(&list);
            r.used = now;
        }
        list
    }

    fn call(&mut self, stream: u32) -> Option<&mut Call> {
        let full = self.open.len() >= self.limits.max_open_calls;
        if let Some(unmarked) = &mut self.goaway_unmarked {
            if unmarked.len() > 2 * self.open.len() + 64 {
                // Amortised: drops streams closed or refused since the last prune.
                let open = &self.open;
                unmarked.retain(|id| open.get(id).is_some_and(|c| !c.refused_by_goaway));
            }
        }
        match self.open.entry(stream) {
            Entry::Occupied(o) => Some(o.into_mut()),
            Entry::Vacant(_) if full => {
                self.untracked_streams += 1;
                None
            }
            Entry::Vacant(v) => {
                self.calls_seen += 1;
                if let Some(unmarked) = &mut self.goaway_unmarked {
                    if stream % 2 == 1 {
                        unmarked.insert(stream);
                    }
                }
                Some(v.insert(Box::new(Call::new(self.conn, stream, self.limits.messages))))
            }
        }
    }

    /// Applies one HTTP/2 event; calls that end are handed to `done`.
    pub fn event(&mut self, ev: Event<'_>, done: &mut impl FnMut(Box<Call>)) {
        match ev {
            Event::Headers {
                stream,
                dir,
                fields,
                end_stream,
                error,
                frame,
                ts_ns,
            } => {
                if stream == 0 {
                    return;
                }
                let list = self.header_list(dir, fields, error);
                let Some(call) = self.call(stream) else {
                    return;
                };
                call.note_frame(dir, frame, ts_ns);
                match dir {
                    Dir::ToServer => {
                        if call.request_headers.is_none() {
                            call.request.encoding =
                                Encoding::from_header(list.get("grpc-encoding"));
                            if let Some((req, resp)) = list
                                .get(":path")
                                .and_then(crate::tfserving::Method::pruning)
                            {
                                call.request.prune(req);
                                call.response.prune(resp);
                            }
                            if list
                                .get("content-type")
                                .is_some_and(|ct| !ct.starts_with("application/grpc"))
                            {
                                call.request.set_raw();
                            }
                            call.request_headers = Some(list);
                        }
                        // Request trailers are not used by gRPC; ignore their content.
                        if end_stream {
                            call.request_ended = true;
                            call.request.finish();
                            self.complete_if_done(stream, done);
                        }
                    }
                    Dir::ToClient => {
                        if call.response_headers.is_none() {
                            call.response.encoding =
                                Encoding::from_header(list.get("grpc-encoding"));
                            if list
                                .get("content-type")
                                .is_some_and(|ct| !ct.starts_with("application/grpc"))
                            {
                                call.response.set_raw();
                            }
                            call.response_headers = Some(list);
                        } else {
                            call.trailers = Some(list);
                        }
                        if end_stream {
                            call.response.finish();
                            call.ending = Ending::Completed;
                            self.complete_if_done(stream, done);
                        }
                    }
                }
            }
            Event::Data {
                stream,
                dir,
                data,
                end_stream,
                frame,
                ts_ns,
            } => {
                let Some(call) = self.call(stream) else {
                    return;
                };
                call.note_frame(dir, frame, ts_ns);
                // Without the stream's headers, its first DATA bytes may be the
                // middle of a message: only a plausible prefix is trusted.
                let (headers_seen, deframer) = match dir {
                    Dir::ToServer => (call.request_headers.is_some(), &mut call.request),
                    Dir::ToClient => (call.response_headers.is_some(), &mut call.response),
                };
                if !headers_seen && deframer.is_fresh() && !deframer.plausible_start(data) {
                    deframer.desync();
                    call.started_unframed[dir.index()] = true;
                }
                let queue = !std::mem::replace(&mut call.desync_queued[dir.index()], true);
                match dir {
                    Dir::ToServer => {
                        call.request.push(data);
                        if end_stream {
                            call.request_ended = true;
                            call.request.finish();
                            self.complete_if_done(stream, done);
                        }
                    }
                    Dir::ToClient => {
                        call.response.push(data);
                        if end_stream {
                            // DATA with END_STREAM ends a response without trailers.
                            call.response.finish();
                            call.ending = Ending::Completed;
                            self.complete_if_done(stream, done);
                        }
                    }
                }
                if queue {
                    self.queue_desync_check(dir, stream);
                }
            }
            Event::DataLost { stream, dir, len } => {
                if let Some(call) = self.open.get_mut(&stream) {
                    call.lost_bytes[dir.index()] += len;
                    match dir {
                        Dir::ToServer => call.request.lost(len),
                        Dir::ToClient => call.response.lost(len),
                    }
                }
            }
            Event::Reset {
                stream,
                dir,
                code,
                frame,
                ts_ns,
            } => {
                if let Some(call) = self.open.get_mut(&stream) {
                    call.note_frame(dir, frame, ts_ns);
                    call.ending = Ending::Reset { by: dir, code };
                    call.request.finish();
                    call.response.finish();
                    self.complete(stream, done);
                }
            }
            Event::GoAway {
                dir,
                last_stream,
                code,
                ..
            } => {
                self.goaway = Some((dir, last_stream, code));
                if dir == Dir::ToClient {
                    // Every open odd stream above `last_stream` is refused;
                    // those already refused stay so and are not revisited.
                    let open = &mut self.open;
                    let unmarked = self.goaway_unmarked.get_or_insert_with(|| {
                        open.keys().copied().filter(|id| id % 2 == 1).collect()
                    });
                    let above = match last_stream.checked_add(1) {
                        Some(from) => unmarked.split_off(&from),
                        None => BTreeSet::new(),
                    };
                    for id in above {
                        if let Some(call) = open.get_mut(&id) {
                            call.refused_by_goaway = true;
                        }
                    }
                }
            }
            Event::Desync { dir } => {
                // Only calls with a message in progress in that direction lose
                // something; a call whose bytes in that direction have not
                // started yet (its response was seen first) is unaffected.
                // Only bytes can put a message in progress, and a loss leaves
                // none in progress (or the direction lost for good), so the
                // calls that received bytes since the last loss are all the
                // candidates.
                let i = dir.index();
                for id in std::mem::take(&mut self.desync_check[i]) {
                    let Some(call) = self.open.get_mut(&id) else {
                        continue;
                    };
                    call.desync_queued[i] = false;
                    let d = match dir {
                        Dir::ToServer if !call.request_ended => &mut call.request,
                        Dir::ToClient => &mut call.response,
                        Dir::ToServer => continue,
                    };
                    if d.in_progress() {
                        d.desync();
                        call.desynced[dir.index()] = true;
                    }
                }
            }
        }
    }

    /// Notes that `stream` received bytes in `dir` since the last loss there.
    fn queue_desync_check(&mut self, dir: Dir, stream: u32) {
        let i = dir.index();
        let open = &self.open;
        let queue = &mut self.desync_check[i];
        queue.push(stream);
        if queue.len() > 2 * open.len() + 64 {
            // Amortised: drops streams closed since (or reopened: listed twice).
            queue.retain(|id| open.get(id).is_some_and(|c| c.desync_queued[i]));
            queue.sort_unstable();
            queue.dedup();
        }
    }

    /// Hands a call over once both directions ended. A response can be seen
    /// before the end of its request: the server may answer early, or the
    /// capture may order packets of the two directions differently.
    fn complete_if_done(&mut self, stream: u32, done: &mut impl FnMut(Box<Call>)) {
        if self
            .open
            .get(&stream)
            .is_some_and(|c| c.ending == Ending::Completed && c.request_ended)
        {
            self.complete(stream, done);
        }
    }

    fn complete(&mut self, stream: u32, done: &mut impl FnMut(Box<Call>)) {
        if let Some(call) = self.open.remove(&stream) {
            done(call);
        }
    }

    /// Hands over calls with no activity since `cutoff_ns` (a stuck call on
    /// a connection that keeps carrying other traffic).
    pub fn expire(&mut self, cutoff_ns: i64, done: &mut impl FnMut(Box<Call>)) -> usize {
        let mut ids: Vec<u32> = self
            .open
            .iter()
            .filter(|(_, c)| c.end_ts_ns.or(c.start_ts_ns).is_some_and(|t| t < cutoff_ns))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in &ids {
            if let Some(mut call) = self.open.remove(id) {
                call.request.finish();
                call.response.finish();
                if call.ending != Ending::Completed {
                    call.ending = Ending::Expired;
                }
                done(call);
            }
        }
        ids.len()
    }

    /// The connection ended: every open call is handed over, in stream order.
    pub fn close(&mut self, done: &mut impl FnMut(Box<Call>)) {
        let mut ids: Vec<u32> = self.open.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(mut call) = self.open.remove(&id) {
                call.request.finish();
                call.response.finish();
                if call.ending != Ending::Completed {
                    call.ending = Ending::ConnectionClosed;
                }
                done(call);
            }
        }
    }

    pub fn open_calls(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(
            percent_decode("Expects arg[0] to be float%0A%09 [[{{node x}}]]"),
            "Expects arg[0] to be float\n\t [[{{node x}}]]"
        );
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%FF"), "\u{fffd}");
    }

    /// Header lists built from random blocks (unknown names and values,
    /// invalid UTF-8, characters split between name and value, blocks over
    /// the cap) hold what a field-by-field lossy conversion gives.
    #[test]
    fn header_lists_match_field_by_field_conversion() {
        let mut next = crate::test_rng(0x2545_f491_4f6c_dd1du64);
        let pieces: [&[u8]; 9] = [
            b"content-type",
            b"grpc-status",
            b"application/grpc",
            "é".as_bytes(),
            &[0xc3],
            &[0xa9],
            &[0xff],
            b"",
            &[b'x'; 5000],
        ];
        for _ in 0..20_000 {
            let mut block = HeaderBlock::default();
            let mut expected: Vec<(String, String)> = Vec::new();
            let mut expected_unknown_values = Vec::new();
            let mut expected_unnamed = Vec::new();
            let mut kept = 0;
            for _ in 0..next(6) {
                let mut text = || -> Option<Vec<u8>> {
                    if next(8) == 0 {
                        return None;
                    }
                    Some(
                        (0..next(3))
                            .flat_map(|_| pieces[next(9) as usize].to_vec())
                            .collect(),
                    )
                };
                let (name, value) = (text(), text());
                block.push(name.as_deref(), value.as_deref());
                let size = name.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len);
                if kept + size > MAX_HEADER_BYTES_KEPT {
                    continue;
                }
                kept += size;
                match (name, value) {
                    (Some(n), Some(v)) => expected.push((lossy(&n), lossy(&v))),
                    (Some(n), None) => expected_unknown_values.push(lossy(&n)),
                    (None, Some(v)) => expected_unnamed.push(lossy(&v)),
                    (None, None) => {}
                }
            }
            let h = HeaderList::from_fields(&block, None);
            let got: Vec<(String, String)> = h
                .fields()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, expected);
            for name in LOOKED_UP.iter().chain(&["é", ""]) {
                let want = expected
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str());
                assert_eq!(h.get(name), want, "{name}");
            }
            assert_eq!(h.unknown_values, expected_unknown_values);
            assert_eq!(h.unnamed_values, expected_unnamed);
        }
    }

    #[test]
    fn lookups_past_the_indexed_fields() {
        let mut block = HeaderBlock::default();
        for i in 0..300 {
            let name = if i == 280 { "content-type" } else { "x" };
            block.push(Some(name.as_bytes()), Some(i.to_string().as_bytes()));
        }
        let h = HeaderList::from_fields(&block, None);
        assert_eq!(h.get("content-type"), Some("280"));
        assert_eq!(h.get("x"), Some("0"));
        assert_eq!(h.get(":path"), None);
    }

    /// A header block of known fields.
    fn block(kv: &[(&str, &str)]) -> HeaderBlock {
        let mut b = HeaderBlock::default();
        for (k, v) in kv {
            b.push(Some(k.as_bytes()), Some(v.as_bytes()));
        }
        b
    }

    /// What the walk over every open call did at a GOAWAY or a loss of
    /// framing: (stream, refused, desynced, request in progress/lost,
    /// response in progress/lost).
    fn outcomes(t: &CallTable) -> Vec<(u32, bool, [bool; 2], [bool; 4])> {
        let mut v: Vec<_> = t
            .open
            .iter()
            .map(|(id, c)| {
                let d = [
                    c.request.in_progress(),
                    c.request.is_lost(),
                    c.response.in_progress(),
                    c.response.is_lost(),
                ];
                (*id, c.refused_by_goaway, c.desynced, d)
            })
            .collect();
        v.sort_unstable_by_key(|o| o.0);
        v
    }

    /// Random streams of events; at each GOAWAY and loss of framing the
    /// open calls end up as the walk over all of them left them.
    #[test]
    fn goaway_and_desync_touch_the_calls_a_full_walk_would() {
        let mut next = crate::test_rng(0x9e37_79b9_7f4a_7c15u64);
        let req = block(&[(":path", "/x"), ("content-type", "application/grpc")]);
        let (mut goaways, mut desyncs) = (0, 0);
        for round in 0..40 {
            let limits = Limits {
                max_open_calls: 1 + round * 3,
                ..Limits::default()
            };
            let mut t = CallTable::new(0, limits);
            let mut done = |_: Box<Call>| {};
            for i in 0..3000u64 {
                let stream = 1 + next(60) as u32;
                let dir = if next(2) == 0 {
                    Dir::ToServer
                } else {
                    Dir::ToClient
                };
                match next(20) {
                    0 | 1 => {
                        let last_stream = match next(4) {
                            0 => u32::MAX,
                            _ => next(64) as u32,
                        };
                        let mut want = outcomes(&t);
                        if dir == Dir::ToClient {
                            for o in &mut want {
                                o.1 |= o.0 > last_stream && o.0 % 2 == 1;
                            }
                        }
                        let ev = Event::GoAway {
                            dir,
                            last_stream,
                            code: 0,
                            debug: b"",
                            frame: i,
                            ts_ns: 0,
                        };
                        t.event(ev, &mut done);
                        assert_eq!(outcomes(&t), want, "round {round} event {i}");
                        goaways += 1;
                    }
                    2 => {
                        let mut want = outcomes(&t);
                        for o in &mut want {
                            let c = &t.open[&o.0];
                            let (d, skip) = match dir {
                                Dir::ToServer => (&c.request, c.request_ended),
                                Dir::ToClient => (&c.response, false),
                            };
                            if !skip && d.in_progress() {
                                o.2[dir.index()] = true;
                                let k = 2 * dir.index();
                                o.3[k] = false;
                                o.3[k + 1] = true;
                            }
                        }
                        t.event(Event::Desync { dir }, &mut done);
                        assert_eq!(outcomes(&t), want, "round {round} event {i}");
                        desyncs += 1;
                    }
                    3 => t.event(
                        Event::DataLost {
                            stream,
                            dir,
                            len: next(8),
                        },
                        &mut done,
                    ),
                    4 => t.event(
                        Event::Reset {
                            stream,
                            dir,
                            code: 8,
                            frame: i,
                            ts_ns: 0,
                        },
                        &mut done,
                    ),
                    5..=7 => t.event(
                        Event::Headers {
                            stream,
                            dir,
                            fields: &req,
                            end_stream: next(4) == 0,
                            error: None,
                            frame: i,
                            ts_ns: 0,
                        },
                        &mut done,
                    ),
                    _ => {
                        // Pieces of length-prefixed messages, small lengths.
                        let data: Vec<u8> = (0..next(9))
                            .map(|_| [0, 0, 0, 1, 3, 7, 0xff][next(7) as usize])
                            .collect();
                        t.event(
                            Event::Data {
                                stream,
                                dir,
                                data: &data,
                                end_stream: next(8) == 0,
                                frame: i,
                                ts_ns: 0,
                            },
                            &mut done,
                        );
                    }
                }
                let bound = 2 * t.open.len() + 64 + 1;
                assert!(t.desync_check.iter().all(|q| q.len() <= bound));
                assert!(t.goaway_unmarked.as_ref().is_none_or(|u| u.len() <= bound));
            }
        }
        assert!(goaways > 10_000 && desyncs > 5_000);
    }

    #[test]
    fn repeated_header_blocks_share_their_list() {
        let mut t = CallTable::new(0, Limits::default());
        let headers = block(&[(":status", "200"), ("content-type", "application/grpc")]);
        let ok = block(&[("grpc-status", "0"), ("grpc-message", "")]);
        let first_headers = t.header_list(Dir::ToClient, &headers, None);
        let first_ok = t.header_list(Dir::ToClient, &ok, None);
        for call in 0..10 {
            // Requests all differ (they churn their own direction's slots),
            // and a failure's trailers come now and then.
            let id = format!("req-{call}");
            let req = block(&[(":path", "/p"), ("x-request-id", &id)]);
            let list = t.header_list(Dir::ToServer, &req, None);
            assert_eq!(list.get("x-request-id"), Some(id.as_str()));
            let h = t.header_list(Dir::ToClient, &headers, None);
            assert!(Arc::ptr_eq(&h, &first_headers), "call {call}");
            let failed = block(&[("grpc-status", "3"), ("grpc-message", &id)]);
            let trailers = if call % 3 == 0 { &failed } else { &ok };
            let tr = t.header_list(Dir::ToClient, trailers, None);
            assert_eq!(Arc::ptr_eq(&tr, &first_ok), call % 3 != 0, "call {call}");
            assert_eq!(
                tr.get("grpc-message"),
                Some(if call % 3 == 0 { id.as_str() } else { "" })
            );
        }
        // The same fields in the other direction, or with an error, are
        // lists of their own.
        let other_way = t.header_list(Dir::ToServer, &headers, None);
        assert!(!Arc::ptr_eq(&other_way, &first_headers));
        assert_eq!(other_way.get(":status"), Some("200"));
        let with_error = t.header_list(Dir::ToClient, &headers, Some("HPACK: x".into()));
        assert!(!Arc::ptr_eq(&with_error, &first_headers));
        assert_eq!(with_error.error.as_deref(), Some("HPACK: x"));
        // Blocks too large to remember (in bytes or in fields) still decode.
        let big_value = "v".repeat(RECENT_MAX_BYTES);
        let big = block(&[("x-big", &big_value)]);
        let many: Vec<(&str, &str)> = vec![("x", "1"); RECENT_MAX_FIELDS + 1];
        for (large, name, value) in [(big, "x-big", big_value.as_str()), (block(&many), "x", "1")] {
            let a = t.header_list(Dir::ToClient, &large, None);
            let b = t.header_list(Dir::ToClient, &large, None);
            assert!(!Arc::ptr_eq(&a, &b));
            assert_eq!(b.get(name), Some(value));
        }
        // Blocks not taken whole (text not UTF-8, a value never seen) are
        // not remembered: their lists can be several times their bytes.
        let mut lossy = HeaderBlock::default();
        lossy.push(Some(b"x-bin"), Some(&[0xff; 16]));
        let mut unknown = block(&[(":status", "200")]);
        unknown.push(Some(b"x-lost"), None);
        for odd in [lossy, unknown] {
            let a = t.header_list(Dir::ToServer, &odd, None);
            let b = t.header_list(Dir::ToServer, &odd, None);
            assert!(!Arc::ptr_eq(&a, &b));
            assert_eq!(a.fields().count(), b.fields().count());
        }
        assert_eq!(
            t.header_list(Dir::ToServer, &block(&[(":status", "200")]), None)
                .get(":status"),
            Some("200")
        );
        assert!(t.recent.iter().all(|r| r.len() <= RECENT_LISTS));
        for r in t.recent.iter().flatten() {
            assert!(r.list.is_whole(&r.fields));
        }
    }

    #[test]
    fn status_from_trailers_only() {
        let mut t = CallTable::new(0, Limits::default());
        let fields = block;
        let mut out = Vec::new();
        let req = fields(&[(":path", "/tensorflow.serving.PredictionService/Predict")]);
        t.event(
            Event::Headers {
                stream: 1,
                dir: Dir::ToServer,
                fields: &req,
                end_stream: false,
                error: None,
                frame: 4,
                ts_ns: 10,
            },
            &mut |c| out.push(c),
        );
        t.event(
            Event::Data {
                stream: 1,
                dir: Dir::ToServer,
                data: &[0, 0, 0, 0, 2, 8, 1],
                end_stream: true,
                frame: 5,
                ts_ns: 11,
            },
            &mut |c| out.push(c),
        );
        let resp = fields(&[
            (":status", "200"),
            ("grpc-status", "3"),
            ("grpc-message", "bad%20input"),
        ]);
        t.event(
            Event::Headers {
                stream: 1,
                dir: Dir::ToClient,
                fields: &resp,
                end_stream: true,
                error: None,
                frame: 7,
                ts_ns: 20,
            },
            &mut |c| out.push(c),
        );
        assert_eq!(out.len(), 1);
        let c = &out[0];
        assert_eq!(c.status().code, Some(3));
        assert_eq!(c.status().message.as_deref(), Some("bad input"));
        assert_eq!(c.http_status(), Some(200));
        assert_eq!(c.request_frames, vec![4, 5]);
        assert_eq!(c.response_frames, vec![7]);
        assert_eq!(&c.request.messages[0].data[..], &[8, 1]);
        assert_eq!(t.open_calls(), 0);
        // The raw text is kept only when it is not a number.
        assert_eq!(c.status().raw_code, "");
    }

    /// A grpc-status that is not a number: no code, its text kept, and the
    /// exchange says so.
    #[test]
    fn unparseable_status_keeps_its_text() {
        let mut block = HeaderBlock::default();
        for (k, v) in [(":status", "200"), ("grpc-status", " oops ")] {
            block.push(Some(k.as_bytes()), Some(v.as_bytes()));
        }
        let mut call = Call::new(0, 1, MessageLimits::default());
        call.response_headers = Some(Arc::new(HeaderList::from_fields(&block, None)));
        call.ending = Ending::Completed;
        let st = call.status();
        assert_eq!(st.code, None);
        assert_eq!(st.raw_code, " oops ");
        let conn = crate::net::test_conn(0, "10.0.0.1:5000", "10.0.0.2:8500");
        let ex = crate::tfserving::Exchange::from_grpc(1, &conn, Box::new(call));
        assert!(
            ex.notes
                .iter()
                .any(|n| n == "unparseable grpc-status \" oops \""),
            "{:?}",
            ex.notes
        );
        assert!(!ex.status.ok);
    }
}
