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
struct Held(Vec<u8>);

impl Held {
    fn bytes(mut out: Vec<u8>) -> Bytes {
        out.shrink_to_fit();
        DECOMPRESSED_HELD.fetch_add(out.capacity(), Ordering::Relaxed);
        Bytes::from_owner(Held(out))
    }
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        DECOMPRESSED_HELD.fetch_sub(self.0.capacity(), Ordering::Relaxed);
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
        }
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
                        if keep {
                            // Reserve what the prefix announces, but never more than
                            // a modest amount up front: the prefix is untrusted.
                            self.buf.reserve((len as usize).min(4 << 20));
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
                        self.buf.extend_from_slice(&data[..n]);
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
            let data = if keep {
                Bytes::from(std::mem::take(&mut self.buf))
            } else {
                Bytes::new()
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
            });
            return;
        }
        let raw = std::mem::take(&mut self.buf);
        if lost > 0 {
            self.record(Message {
                compressed,
                wire_len: len,
                data: Bytes::from(raw),
                complete: false,
                problem: Some(format!("{lost} bytes of this message were not captured")),
                note: None,
            });
            return;
        }
        let msg = if compressed {
            self.decompress(len, &raw)
        } else {
            Message {
                compressed,
                wire_len: len,
                data: Bytes::from(raw),
                complete: true,
                problem: None,
                note: None,
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
        let result = if gzip {
            GzDecoder::new(raw).take(cap + 1).read_to_end(&mut out)
        } else {
            ZlibDecoder::new(raw).take(cap + 1).read_to_end(&mut out)
        };
        match result {
            Ok(_) if out.len() as u64 <= cap => Message {
                compressed: true,
                wire_len: len,
                data: Held::bytes(out),
                complete: true,
                problem: None,
                note: sniffed.map(|what| {
                    format!("grpc-encoding not seen; the message was recognised as {what} by its header")
                }),
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
        }
    }

    fn record(&mut self, m: Message) {
        if self.messages.len() < self.limits.max_messages {
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
