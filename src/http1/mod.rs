//! Passive HTTP/1.x decoder: requests and responses of one connection, with
//! keep-alive, pipelining (responses pair with requests in order),
//! Content-Length, chunked bodies, `Expect: 100-continue` and responses
//! delimited by the connection's close. Bodies are kept up to a cap.

use std::collections::VecDeque;
use std::io::Read;

use crate::net::Dir;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest header block (start line + headers).
    pub max_head: usize,
    /// Body bytes kept per message (also the cap for decompressed bodies).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 64 << 10,
            max_body: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: String,
        target: String,
        version: u8,
    },
    Response {
        version: u8,
        status: u16,
        reason: String,
    },
}

/// One HTTP message as seen on the wire.
#[derive(Debug, Clone)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<(String, String)>,
    /// The body as the application sees it (de-chunked; gzip request bodies
    /// decompressed), up to the cap.
    pub body: Vec<u8>,
    /// Body bytes on the wire (after de-chunking, before decompression).
    pub body_wire_len: u64,
    /// Every byte of the body was seen and kept.
    pub body_complete: bool,
    pub frames: Vec<u64>,
    pub first_ts_ns: i64,
    pub last_ts_ns: i64,
    pub problems: Vec<String>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    fn note_frame(&mut self, frame: u64, ts_ns: i64) {
        if frame != 0 && self.frames.last() != Some(&frame) && self.frames.len() < 256 {
            self.frames.push(frame);
        }
        if ts_ns != 0 {
            self.last_ts_ns = ts_ns;
        }
    }
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug)]
enum Chunk {
    /// Reading the chunk-size line.
    Size(Vec<u8>),
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd(u8),
    /// Trailer lines until an empty line; holds the current line.
    Trailers(Vec<u8>),
}

#[derive(Debug)]
enum State {
    Head,
    Body {
        msg: Box<Message>,
        body: Body,
    },
    /// Framing lost (a gap in a header block, or garbage): waiting for
    /// something that looks like the start of a message.
    Lost,
}

/// One direction of an HTTP/1 connection.
#[derive(Debug)]
struct Half {
    dir: Dir,
    state: State,
    head: Vec<u8>,
    head_frames: Vec<u64>,
    head_ts: i64,
}

/// What the decoder reports.
#[derive(Debug)]
pub enum Event {
    /// A request and the response that answered it (or none: the connection
    /// ended first).
    Exchange {
        request: Option<Box<Message>>,
        response: Option<Box<Message>>,
    },
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub requests: u64,
    pub responses: u64,
    pub interim_responses: u64,
    pub parse_errors: u64,
    pub bodies_over_limit: u64,
    pub resyncs: u64,
}

/// Requests held waiting for their response; past this the oldest is
/// reported unanswered (a client pipelining into a server that never
/// answers must not grow memory without bound).
pub const MAX_PENDING: usize = 256;

/// An HTTP/1 connection seen from the outside.
pub struct Connection {
    halves: [Half; 2],
    /// Requests waiting for their response, oldest first (at most `MAX_PENDING`).
    pending: VecDeque<Box<Message>>,
    limits: Limits,
    pub stats: Stats,
}

const METHODS: &[&str] = &[
    "GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "CONNECT ",
];

/// Whether `b` starts like an HTTP/1 request (enough to route a connection).
pub fn looks_like_request(b: &[u8]) -> bool {
    METHODS.iter().any(|m| {
        let n = m.len().min(b.len());
        n >= 3 && b[..n] == m.as_bytes()[..n]
    })
}

pub fn looks_like_response(b: &[u8]) -> bool {
    let n = b.len().min(7);
    n >= 5 && b[..n] == b"HTTP/1."[..n]
}

impl Connection {
    pub fn new(limits: Limits) -> Self {
        let half = |dir| Half {
            dir,
            state: State::Head,
            head: Vec::new(),
            head_frames: Vec::new(),
            head_ts: 0,
        };
        Connection {
            halves: [half(Dir::ToServer), half(Dir::ToClient)],
            pending: VecDeque::new(),
            limits,
            stats: Stats::default(),
        }
    }

    /// Requests not yet answered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn data(
        &mut self,
        dir: Dir,
        mut bytes: &[u8],
        frame: u64,
        ts_ns: i64,
        out: &mut impl FnMut(Event),
    ) {
        let i = dir.index();
        while !bytes.is_empty() {
            match &mut self.halves[i].state {
                State::Lost => {
                    // Resynchronise at the start of a message in this chunk.
                    let found = (0..bytes.len()).find(|&k| {
                        (k == 0 || bytes[k - 1] == b'\n')
                            && match dir {
                                Dir::ToServer => looks_like_request(&bytes[k..]),
                                Dir::ToClient => looks_like_response(&bytes[k..]),
                            }
                    });
                    match found {
                        Some(k) => {
                            self.stats.resyncs += 1;
                            self.halves[i].state = State::Head;
                            bytes = &bytes[k..];
                        }
                        None => return,
                    }
                }
                State::Head => {
                    let half = &mut self.halves[i];
                    if half.head.is_empty() {
                        half.head_ts = ts_ns;
                        half.head_frames.clear();
                    }
                    if half.head_frames.last() != Some(&frame) {
                        half.head_frames.push(frame);
                    }
                    // Look for the end of the head across the old and new bytes.
                    let old = half.head.len();
                    let take = bytes
                        .len()
                        .min(self.limits.max_head + 4 - old.min(self.limits.max_head));
                    half.head.extend_from_slice(&bytes[..take]);
                    let search_from = old.saturating_sub(3);
                    let end =
                        find(&half.head[search_from..], b"\r\n\r\n").map(|p| p + search_from + 4);
                    match end {
                        Some(end) => {
                            let consumed = end - old;
                            let head = std::mem::take(&mut half.head);
                            bytes = &bytes[consumed..];
                            self.on_head(i, &head[..end], frame, ts_ns, out);
                        }
                        None if half.head.len() > self.limits.max_head => {
                            self.stats.parse_errors += 1;
                            half.head.clear();
                            half.state = State::Lost;
                            bytes = &bytes[take..];
                        }
                        None => {
                            bytes = &bytes[take..];
                        }
                    }
                }
                State::Body { .. } => {
                    let n = self.body_bytes(i, bytes, frame, ts_ns, out);
                    bytes = &bytes[n..];
                }
            }
        }
    }

    /// `len` bytes of one direction were lost.
    pub fn gap(&mut self, dir: Dir, len: u64, out: &mut impl FnMut(Event)) {
        let i = dir.index();
        let limits = self.limits;
        let half = &mut self.halves[i];
        match &mut half.state {
            State::Body {
                msg,
                body: Body::Length(left),
            } if len <= *left => {
                // The framing survives a loss inside a known-length body.
                *left -= len;
                msg.body_complete = false;
                msg.body_wire_len += len;
                msg.problems.push(format!("{len} body bytes not captured"));
                if *left == 0 {
                    self.finish_body(i, out);
                }
            }
            State::Body { msg, .. } => {
                msg.body_complete = false;
                msg.problems.push(format!(
                    "{len} bytes not captured; the rest of this message is lost"
                ));
                let _ = limits;
                self.finish_body(i, out);
                self.halves[i].state = State::Lost;
            }
            State::Head => {
                half.head.clear();
                half.state = State::Lost;
            }
            State::Lost => {}
        }
    }

    /// One direction ended (FIN/RST or end of capture).
    pub fn end(&mut self, dir: Dir, out: &mut impl FnMut(Event)) {
        let i = dir.index();
        if let State::Body { msg, body } = &mut self.halves[i].state {
            if !matches!(body, Body::UntilClose) {
                msg.body_complete = false;
                msg.problems
                    .push("connection ended before the end of the body".into());
            }
            self.finish_body(i, out);
        }
        self.halves[i].state = State::Lost;
    }

    /// The connection is gone: unanswered requests are reported alone.
    pub fn close(&mut self, out: &mut impl FnMut(Event)) {
        self.end(Dir::ToServer, out);
        self.end(Dir::ToClient, out);
        while let Some(req) = self.pending.pop_front() {
            out(Event::Exchange {
                request: Some(req),
                response: None,
            });
        }
    }

    fn on_head(
        &mut self,
        i: usize,
        head: &[u8],
        frame: u64,
        ts_ns: i64,
        out: &mut impl FnMut(Event),
    ) {
        let dir = self.halves[i].dir;
        let mut storage = [httparse::EMPTY_HEADER; 128];
        let parsed = match dir {
            Dir::ToServer => {
                let mut req = httparse::Request::new(&mut storage);
                match req.parse(head) {
                    Ok(httparse::Status::Complete(_)) => Some((
                        StartLine::Request {
                            method: req.method.unwrap_or("").to_string(),
                            target: req.path.unwrap_or("").to_string(),
                            version: req.version.unwrap_or(1),
                        },
                        headers_of(req.headers),
                    )),
                    _ => None,
                }
            }
            Dir::ToClient => {
                let mut resp = httparse::Response::new(&mut storage);
                match resp.parse(head) {
                    Ok(httparse::Status::Complete(_)) => Some((
                        StartLine::Response {
                            version: resp.version.unwrap_or(1),
                            status: resp.code.unwrap_or(0),
                            reason: resp.reason.unwrap_or("").to_string(),
                        },
                        headers_of(resp.headers),
                    )),
                    _ => None,
                }
            }
        };
        let Some((start, headers)) = parsed else {
            self.stats.parse_errors += 1;
            self.halves[i].state = State::Lost;
            return;
        };
        let half = &mut self.halves[i];
        let msg = Box::new(Message {
            start,
            headers,
            body: Vec::new(),
            body_wire_len: 0,
            body_complete: true,
            frames: std::mem::take(&mut half.head_frames),
            first_ts_ns: half.head_ts,
            last_ts_ns: ts_ns,
            problems: Vec::new(),
        });
        let _ = frame;
        let body = self.body_kind(&msg);
        match body {
            None => {
                self.halves[i].state = State::Head;
                self.complete(i, msg, out);
            }
            Some(b) => {
                self.halves[i].state = State::Body { msg, body: b };
            }
        }
    }

    /// How the body of `msg` is delimited (RFC 9112 §6.3); None: no body.
    fn body_kind(&self, msg: &Message) -> Option<Body> {
        let chunked = msg.header("transfer-encoding").is_some_and(|v| {
            v.to_ascii_lowercase()
                .split(',')
                .any(|t| t.trim() == "chunked")
        });
        let length = msg
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        match &msg.start {
            StartLine::Request { .. } => {
                if chunked {
                    Some(Body::Chunked(Chunk::Size(Vec::new())))
                } else {
                    match length {
                        Some(0) | None => None,
                        Some(n) => Some(Body::Length(n)),
                    }
                }
            }
            StartLine::Response { status, .. } => {
                let head_request = self.pending.front().is_some_and(
                    |r| matches!(&r.start, StartLine::Request { method, .. } if method == "HEAD"),
                );
                if (100..200).contains(status) || *status == 204 || *status == 304 || head_request {
                    None
                } else if chunked {
                    Some(Body::Chunked(Chunk::Size(Vec::new())))
                } else {
                    match length {
                        Some(0) => None,
                        Some(n) => Some(Body::Length(n)),
                        None => Some(Body::UntilClose),
                    }
                }
            }
        }
    }

    /// Consumes body bytes; returns how many were used.
    fn body_bytes(
        &mut self,
        i: usize,
        bytes: &[u8],
        frame: u64,
        ts_ns: i64,
        out: &mut impl FnMut(Event),
    ) -> usize {
        let max_body = self.limits.max_body;
        let State::Body { msg, body } = &mut self.halves[i].state else {
            return bytes.len();
        };
        msg.note_frame(frame, ts_ns);
        let mut used = 0;
        let mut done = false;
        let keep = |msg: &mut Message, data: &[u8]| {
            msg.body_wire_len += data.len() as u64;
            let room = max_body.saturating_sub(msg.body.len());
            if data.len() > room {
                msg.body_complete = false;
            }
            msg.body.extend_from_slice(&data[..data.len().min(room)]);
        };
        while used < bytes.len() && !done {
            let rest = &bytes[used..];
            match body {
                Body::Length(left) => {
                    let n = (*left).min(rest.len() as u64) as usize;
                    keep(msg, &rest[..n]);
                    *left -= n as u64;
                    used += n;
                    done = *left == 0;
                }
                Body::UntilClose => {
                    keep(msg, rest);
                    used += rest.len();
                }
                Body::Chunked(chunk) => match chunk {
                    Chunk::Size(line) => {
                        let nl = rest.iter().position(|&b| b == b'\n');
                        let take = nl.map_or(rest.len(), |p| p + 1);
                        if line.len() + take > 1024 {
                            msg.problems.push("chunk-size line too long".into());
                            msg.body_complete = false;
                            used = bytes.len();
                            done = true;
                            continue;
                        }
                        line.extend_from_slice(&rest[..take]);
                        used += take;
                        if nl.is_some() {
                            let text = String::from_utf8_lossy(line);
                            let hex = text.trim().split(';').next().unwrap_or("").trim();
                            match u64::from_str_radix(hex, 16) {
                                Ok(0) => *chunk = Chunk::Trailers(Vec::new()),
                                Ok(n) => *chunk = Chunk::Data(n),
                                Err(_) => {
                                    msg.problems.push(format!("bad chunk size {hex:?}"));
                                    msg.body_complete = false;
                                    done = true;
                                }
                            }
                        }
                    }
                    Chunk::Data(left) => {
                        let n = (*left).min(rest.len() as u64) as usize;
                        keep(msg, &rest[..n]);
                        *left -= n as u64;
                        used += n;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd(0);
                        }
                    }
                    Chunk::DataEnd(seen) => {
                        // Tolerate a bare LF as well as CRLF.
                        let b = rest[0];
                        used += 1;
                        if b == b'\n' {
                            *chunk = Chunk::Size(Vec::new());
                        } else if b == b'\r' && *seen == 0 {
                            *seen = 1;
                        } else {
                            msg.problems.push("missing CRLF after chunk data".into());
                            *chunk = Chunk::Size(vec![b]);
                        }
                    }
                    Chunk::Trailers(line) => {
                        let nl = rest.iter().position(|&b| b == b'\n');
                        let take = nl.map_or(rest.len(), |p| p + 1);
                        // Only whether the line is empty matters: keep at
                        // most 1 KiB of it, however many deliveries it spans.
                        let room = 1024usize.saturating_sub(line.len());
                        line.extend_from_slice(&rest[..take.min(room)]);
                        used += take;
                        if nl.is_some() {
                            if line.iter().all(|b| *b == b'\r' || *b == b'\n') {
                                done = true;
                            } else {
                                line.clear();
                            }
                        }
                    }
                },
            }
        }
        if done {
            self.finish_body(i, out);
            if matches!(self.halves[i].state, State::Body { .. }) {
                self.halves[i].state = State::Head;
            }
        }
        used
    }

    fn finish_body(&mut self, i: usize, out: &mut impl FnMut(Event)) {
        let state = std::mem::replace(&mut self.halves[i].state, State::Head);
        if let State::Body { mut msg, .. } = state {
            if msg.body_wire_len as usize > msg.body.len() && msg.body_complete {
                msg.body_complete = false;
            }
            if msg.body_wire_len as usize > self.limits.max_body {
                self.stats.bodies_over_limit += 1;
                msg.problems.push(format!(
                    "body of {} bytes exceeds the {} byte limit; kept the first {}",
                    msg.body_wire_len,
                    self.limits.max_body,
                    msg.body.len()
                ));
            }
            self.complete(i, msg, out);
        }
    }

    fn complete(&mut self, i: usize, mut msg: Box<Message>, out: &mut impl FnMut(Event)) {
        decode_content(&mut msg, self.limits.max_body);
        match self.halves[i].dir {
            Dir::ToServer => {
                self.stats.requests += 1;
                if self.pending.len() >= MAX_PENDING {
                    if let Some(mut oldest) = self.pending.pop_front() {
                        oldest.problems.push(format!(
                            "reported unanswered: more than {MAX_PENDING} requests were waiting for a response on this connection"
                        ));
                        out(Event::Exchange {
                            request: Some(oldest),
                            response: None,
                        });
                    }
                }
                self.pending.push_back(msg);
            }
            Dir::ToClient => {
                if msg
                    .status()
                    .is_some_and(|s| (100..200).contains(&s) && s != 101)
                {
                    // 100 Continue and friends precede the real response.
                    self.stats.interim_responses += 1;
                    return;
                }
                self.stats.responses += 1;
                let request = self.pending.pop_front();
                out(Event::Exchange {
                    request,
                    response: Some(msg),
                });
            }
        }
    }
}

fn headers_of(h: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    h.iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `Content-Encoding: gzip|deflate` bodies are decompressed (TF Serving
/// accepts gzip request bodies), capped at `max`.
fn decode_content(msg: &mut Message, max: usize) {
    let Some(enc) = msg
        .header("content-encoding")
        .map(|e| e.trim().to_ascii_lowercase())
    else {
        return;
    };
    if !msg.body_complete || msg.body.is_empty() {
        return;
    }
    let mut out = Vec::new();
    let r = match enc.as_str() {
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(msg.body.as_slice())
            .take(max as u64 + 1)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(msg.body.as_slice())
            .take(max as u64 + 1)
            .read_to_end(&mut out),
        "identity" => return,
        other => {
            msg.problems
                .push(format!("body encoded as {other}; not decoded"));
            return;
        }
    };
    match r {
        Ok(_) if out.len() > max => {
            msg.body_complete = false;
            msg.problems
                .push(format!("{enc} body decompresses to more than {max} bytes"));
        }
        Ok(_) => msg.body = out,
        Err(e) => {
            msg.body_complete = false;
            msg.problems
                .push(format!("{enc} body does not decompress: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pair = (Option<Box<Message>>, Option<Box<Message>>);

    fn run(c: &mut Connection, client: &[&[u8]], server: &[&[u8]]) -> Vec<Pair> {
        let mut out = Vec::new();
        let mut sink = |e: Event| {
            let Event::Exchange { request, response } = e;
            out.push((request, response));
        };
        for b in client {
            c.data(Dir::ToServer, b, 1, 1, &mut sink);
        }
        for b in server {
            c.data(Dir::ToClient, b, 2, 2, &mut sink);
        }
        c.close(&mut sink);
        out
    }

    #[test]
    fn keep_alive_pipelined_and_split_anywhere() {
        let client = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n";
        let server = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"error\": \"bad\"}\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        for split in 1..40 {
            let mut c = Connection::new(Limits::default());
            let cs: Vec<&[u8]> = client.chunks(split).collect();
            let ss: Vec<&[u8]> = server.chunks(split).collect();
            let ex = run(&mut c, &cs, &ss);
            assert_eq!(ex.len(), 2, "split {split}");
            let (req, resp) = &ex[0];
            assert_eq!(req.as_ref().map(|r| r.body.as_slice()), Some(&b"hello"[..]));
            assert_eq!(resp.as_ref().and_then(|r| r.status()), Some(400));
            assert_eq!(resp.as_ref().map(|r| r.body.len()), Some(17));
            assert_eq!(ex[1].1.as_ref().and_then(|r| r.status()), Some(200));
            assert!(
                matches!(&ex[1].0.as_ref().map(|r| r.start.clone()), Some(StartLine::Request { method, .. }) if method == "GET")
            );
        }
    }

    #[test]
    fn chunked_and_continue_and_close_delimited() {
        let mut c = Connection::new(Limits::default());
        let ex = run(
            &mut c,
            &[
                b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
                b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
            ],
            &[
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.0 200 OK\r\n\r\nuntil close",
            ],
        );
        assert_eq!(ex.len(), 1);
        assert_eq!(
            ex[0].0.as_ref().map(|r| r.body.as_slice()),
            Some(&b"hello world"[..])
        );
        assert_eq!(
            ex[0].1.as_ref().map(|r| r.body.as_slice()),
            Some(&b"until close"[..])
        );
        assert_eq!(c.stats.interim_responses, 1);
    }

    #[test]
    fn gzip_request_body_is_decompressed_with_a_cap() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"instances": [1]}"#).expect("gz");
        let body = gz.finish().expect("gz");
        let mut req = format!("POST /v1/models/m:predict HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(&body);
        let mut c = Connection::new(Limits::default());
        let ex = run(
            &mut c,
            &[&req],
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        );
        assert_eq!(
            ex[0].0.as_ref().map(|r| r.body.as_slice()),
            Some(&br#"{"instances": [1]}"#[..])
        );
    }

    #[test]
    fn unanswered_request_and_garbage() {
        let mut c = Connection::new(Limits::default());
        let ex = run(
            &mut c,
            &[b"\x00\x01garbage\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz"],
            &[],
        );
        assert_eq!(ex.len(), 1);
        assert!(ex[0].1.is_none());
        assert_eq!(ex[0].0.as_ref().map(|r| r.body.as_slice()), Some(&b"z"[..]));
    }

    #[test]
    fn gap_inside_a_body_keeps_framing() {
        let mut c = Connection::new(Limits::default());
        let mut out = Vec::new();
        let mut sink = |e: Event| out.push(e);
        c.data(
            Dir::ToServer,
            b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
            1,
            1,
            &mut sink,
        );
        c.gap(Dir::ToServer, 4, &mut sink);
        c.data(
            Dir::ToServer,
            b"xyzGET /y HTTP/1.1\r\n\r\n",
            2,
            2,
            &mut sink,
        );
        c.data(
            Dir::ToClient,
            b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            3,
            3,
            &mut sink,
        );
        assert_eq!(out.len(), 2);
        let Event::Exchange { request, .. } = &out[0];
        assert!(request.as_ref().is_some_and(|r| !r.body_complete));
    }

    /// A trailer line that never ends holds at most 1 KiB, however many
    /// deliveries it spans; the message still completes at the empty line.
    #[test]
    fn endless_trailer_line_is_bounded() {
        let mut c = Connection::new(Limits::default());
        let mut out = Vec::new();
        let mut sink = |e: Event| out.push(e);
        let head =
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: ";
        c.data(Dir::ToServer, head, 1, 1, &mut sink);
        for _ in 0..1000 {
            c.data(Dir::ToServer, &[b'v'; 1000], 1, 1, &mut sink);
        }
        match &c.halves[0].state {
            State::Body {
                body: Body::Chunked(Chunk::Trailers(line)),
                ..
            } => assert!(line.capacity() <= 4096, "{}", line.capacity()),
            other => panic!("{other:?}"),
        }
        c.data(Dir::ToServer, b"\r\n\r\n", 1, 1, &mut sink);
        c.data(
            Dir::ToClient,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
            2,
            &mut sink,
        );
        c.close(&mut sink);
        let Some(Event::Exchange { request, .. }) = out.first() else {
            panic!("no exchange");
        };
        assert_eq!(
            request.as_ref().map(|r| r.body.as_slice()),
            Some(&b"hello"[..])
        );
    }

    #[test]
    fn hostile_head_is_bounded() {
        let mut c = Connection::new(Limits {
            max_head: 1024,
            max_body: 1024,
        });
        let mut out = Vec::new();
        let mut sink = |e: Event| out.push(e);
        let big = vec![b'A'; 100_000];
        c.data(Dir::ToServer, b"GET / HTTP/1.1\r\n", 1, 1, &mut sink);
        c.data(Dir::ToServer, &big, 1, 1, &mut sink);
        assert_eq!(c.stats.parse_errors, 1);
        assert!(c.halves[0].head.capacity() < 10_000);
    }
}
