//! Capture input: pcap and pcapng files or streams, read block by block.
//!
//! The reader never holds more than one block (plus read-ahead) in memory, so a
//! multi-gigabyte capture streams through in constant space. Timestamps are
//! normalised to nanoseconds since the Unix epoch; frame numbers count from 1
//! across all input files, the way Wireshark numbers them for one file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use pcap_parser::nom;
use pcap_parser::pcap::{
    parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
    LegacyPcapBlock, PcapHeader,
};
use pcap_parser::pcapng::{parse_block_be, parse_block_le, parse_sectionheaderblock, Block};
use pcap_parser::{PcapBlockOwned, PcapError};

mod linktype;

pub use linktype::LinkType;

/// One captured packet, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Wireshark frame number (1-based, continuing across files).
    pub frame: u64,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub link: LinkType,
    /// Captured bytes (may be shorter than `orig_len` when snaplen cut the packet).
    pub data: &'a [u8],
    pub orig_len: u32,
}

/// What the reader saw besides packets.
#[derive(Debug, Default, Clone)]
pub struct CaptureStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets whose captured length is below their original length (snaplen).
    pub truncated_packets: u64,
    /// Packets on a pcapng interface that was never described (dropped).
    pub unknown_interface_packets: u64,
    /// Non-packet pcapng blocks skipped (statistics, name resolution, custom …).
    pub other_blocks: u64,
    /// The file ended inside a record or a block was corrupt; reading stopped there.
    pub cut_short: Option<String>,
}

#[derive(Debug)]
pub enum CaptureError {
    Io { path: String, err: io::Error },
    NotACapture { path: String },
    Empty { path: String },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Io { path, err } => write!(f, "{path}: {err}"),
            CaptureError::NotACapture { path } => write!(
                f,
                "{path}: not a pcap or pcapng capture (unrecognised file header)"
            ),
            CaptureError::Empty { path } => write!(f, "{path}: empty file, no capture header"),
        }
    }
}

impl std::error::Error for CaptureError {}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    resolution: u64,
    /// Seconds added to every timestamp (pcapng if_tsoffset).
    offset_s: i64,
}

/// Bytes read at a time: small enough to stay in the core's cache between the
/// read and the walk (1 MiB and 256 KiB measured alike, and both beat a
/// memory map, whose page mapping and release cost the kernel more than
/// `read` copying). A record larger than this gets a chunk of its own.
const CHUNK: usize = 256 << 10;
/// Largest single block accepted. pcapng blocks are at most 2^32 bytes by
/// format, but no real capture has a record near this; a larger one is corrupt.
const MAX_BLOCK: usize = 256 << 20;

/// A piece of the input as read: bytes in a buffer that is zeroed once, when
/// allocated; reads go into its spare room without clearing it again.
#[derive(Default)]
struct Bytes {
    buf: Vec<u8>,
    len: usize,
}

impl Bytes {
    fn with_room(n: usize) -> Bytes {
        Bytes {
            buf: vec![0; n],
            len: 0,
        }
    }

    fn room(&self) -> usize {
        self.buf.len()
    }

    fn push(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        if end > self.buf.len() {
            self.buf.resize(end, 0);
        }
        self.buf[self.len..end].copy_from_slice(data);
        self.len = end;
    }

    /// Keeps `from..` and moves it to the front.
    fn keep_tail(&mut self, from: usize) {
        if from == 0 {
            return;
        }
        self.buf.copy_within(from..self.len, 0);
        self.len -= from;
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

type LegacyParse = fn(&[u8]) -> nom::IResult<&[u8], LegacyPcapBlock<'_>, PcapError<&[u8]>>;

enum Format {
    /// Classic pcap; the file header is handed out once as a block.
    Legacy {
        header: Option<PcapHeader>,
        parse: LegacyParse,
    },
    /// pcapng; the byte order follows the current section.
    Ng { big_endian: bool },
}

/// Reads one capture (file or stream) and hands out its packets.
pub struct CaptureReader<'r> {
    name: String,
    input: Box<dyn Read + Send + 'r>,
    /// A regular file is read until each chunk is full; a pipe is handed on
    /// after every read, so output keeps up with a live writer.
    fill: bool,
    /// The chunk being walked, and the start of its first unwalked record.
    chunk: Bytes,
    pos: usize,
    eof: bool,
    walker: Walker,
}

/// Record parsing, wherever the records' bytes are.
struct Walker {
    format: Format,
    blocks: Blocks,
    /// Bytes of the input consumed so far (for progress).
    consumed: u64,
}

/// Why a walk over some bytes stopped.
enum Walked {
    /// No whole record left; a partial one (or nothing) from `pos`.
    Partial,
    /// Corrupt or oversized: reading stops (recorded).
    Cut,
}

impl<'r> CaptureReader<'r> {
    /// Opens a capture file, or standard input when `path` is `-`.
    pub fn open(path: &Path) -> Result<CaptureReader<'static>, CaptureError> {
        let name = path.display().to_string();
        if name == "-" {
            let fill = is_regular(&std::fs::metadata("/dev/stdin").ok());
            return CaptureReader::with_input(name, Box::new(io::stdin()), fill);
        }
        let file = File::open(path).map_err(|err| CaptureError::Io {
            path: name.clone(),
            err,
        })?;
        let fill = is_regular(&file.metadata().ok());
        CaptureReader::with_input(name, Box::new(file), fill)
    }

    /// Reads a stream (handed on after every read, like a pipe).
    pub fn from_reader<R: Read + Send + 'r>(
        name: String,
        reader: R,
    ) -> Result<CaptureReader<'r>, CaptureError> {
        CaptureReader::with_input(name, Box::new(reader), false)
    }

    fn with_input(
        name: String,
        mut input: Box<dyn Read + Send + 'r>,
        fill: bool,
    ) -> Result<CaptureReader<'r>, CaptureError> {
        let mut first = Bytes::with_room(CHUNK);
        let mut eof = false;
        // Reads until `first` holds `n` bytes (or all it can) or the input ends.
        let mut read_to = |first: &mut Bytes, n: usize, eof: &mut bool| {
            while first.len() < n.min(first.room()) && !*eof {
                *eof = read_more(&mut input, first).map_err(|err| CaptureError::Io {
                    path: name.clone(),
                    err,
                })? == 0;
            }
            Ok::<(), CaptureError>(())
        };
        // The magic and the legacy file header (24 bytes) decide the format.
        read_to(&mut first, 24, &mut eof)?;
        if first.is_empty() {
            return Err(CaptureError::Empty { path: name });
        }
        let (format, pos) = if let Some(shb) = section_header_len(&first) {
            // The whole first section header must parse, or this is not a
            // capture (one longer than a chunk is left to the walk).
            read_to(&mut first, shb, &mut eof)?;
            if shb <= first.room() && parse_sectionheaderblock(&first).is_err() {
                return Err(CaptureError::NotACapture { path: name });
            }
            (Format::Ng { big_endian: false }, 0)
        } else {
            match parse_pcap_header(&first) {
                Ok((_, header)) => {
                    let parse: LegacyParse = if header.is_modified_format() {
                        parse_pcap_frame_modified
                    } else if header.is_bigendian() {
                        parse_pcap_frame_be
                    } else {
                        parse_pcap_frame
                    };
                    (
                        Format::Legacy {
                            header: Some(header),
                            parse,
                        },
                        0,
                    )
                }
                Err(_) => return Err(CaptureError::NotACapture { path: name }),
            }
        };
        let mut reader = CaptureReader {
            name,
            input,
            fill,
            chunk: first,
            pos,
            eof,
            walker: Walker {
                format,
                blocks: Blocks::default(),
                consumed: 0,
            },
        };
        if reader.fill && !reader.eof {
            // Finish the first chunk as every later one is read.
            let mut first = std::mem::take(&mut reader.chunk);
            reader.eof = reader.top_up(&mut first);
            reader.chunk = first;
        }
        Ok(reader)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &CaptureStats {
        &self.walker.blocks.stats
    }

    /// Bytes of input consumed so far.
    pub fn consumed(&self) -> u64 {
        self.walker.consumed
    }

    /// Calls `on_packet` for every packet (with the input bytes consumed before
    /// it, for progress) until the input ends. Frame numbers
    /// start after `first_frame - 1`. Returns the next free frame number.
    /// Corruption stops reading and is recorded in `stats().cut_short`.
    pub fn for_each_packet(
        &mut self,
        first_frame: u64,
        mut on_packet: impl FnMut(&Packet<'_>, u64),
    ) -> u64 {
        let mut frame = first_frame;
        loop {
            let walked = self
                .walker
                .walk(&self.chunk, &mut self.pos, &mut frame, &mut on_packet);
            if let Walked::Cut = walked {
                return frame;
            }
            if !self.ran_out() || !self.refill() {
                return frame;
            }
        }
    }

    /// The chunk holds no further whole record (part of one may remain at
    /// `pos`): true to read more, false where reading stops (recorded).
    fn ran_out(&mut self) -> bool {
        let tail = &self.chunk[self.pos..];
        match self.walker.blocks.claimed_len(tail) {
            Some(n) if n > MAX_BLOCK => {
                self.walker.too_large();
                return false;
            }
            // The whole record is here and still did not parse (say, a
            // pcapng packet claiming more bytes than its block): more input
            // cannot help, and waiting for it would reread the tail a byte
            // at a time.
            Some(n) if n <= tail.len() => {
                self.walker.blocks.stats.cut_short = Some(format!(
                    "corrupt record after byte {} (its contents run past the {n} bytes it claims); stopped reading",
                    self.walker.consumed
                ));
                return false;
            }
            _ => {}
        }
        if !self.eof {
            return true;
        }
        // A read error (recorded) or the end of the input.
        if !tail.is_empty() && self.walker.blocks.stats.cut_short.is_none() {
            self.walker.blocks.stats.cut_short = Some(format!(
                "file ends inside a record ({} trailing bytes ignored)",
                tail.len()
            ));
        }
        false
    }

    /// Starts the next chunk with the unwalked tail of this one (part of a
    /// record) and reads more. A tail over half a chunk gets twice its size,
    /// so a large record takes a few doublings, and memory follows the bytes
    /// actually there, not what a header claims. False when reading fails
    /// (recorded).
    fn refill(&mut self) -> bool {
        let tail_len = self.chunk.len() - self.pos;
        if tail_len > MAX_BLOCK {
            self.walker.too_large();
            return false;
        }
        // Twice the tail, but no more than the record claims (checked against
        // MAX_BLOCK before this), and one chunk beyond MAX_BLOCK at most.
        let mut room = CHUNK.max(tail_len * 2);
        if let Some(claimed) = self.walker.blocks.claimed_len(&self.chunk[self.pos..]) {
            room = room.min(CHUNK.max(claimed));
        }
        let room = room.min(MAX_BLOCK + CHUNK).max(tail_len + 1);
        let mut next = std::mem::take(&mut self.chunk);
        // A buffer grown for a large record is kept only while one needs it.
        let fits = next.room() >= room && (room > CHUNK || next.room() <= CHUNK);
        if fits || (self.pos == 0 && next.room() > next.len) {
            next.keep_tail(self.pos);
        } else {
            let mut bigger = Bytes::with_room(room);
            bigger.push(&next[self.pos..]);
            next = bigger;
        }
        self.pos = 0;
        let result = if self.fill {
            Ok(self.top_up(&mut next))
        } else {
            read_more(&mut self.input, &mut next).map(|n| n == 0)
        };
        self.chunk = next;
        match result {
            Ok(eof) => {
                self.eof = eof;
                true
            }
            Err(_) => {
                self.walker.blocks.stats.cut_short = Some("read error".to_string());
                false
            }
        }
    }

    /// Reads until `buf` is full or the input ends; true at the end.
    fn top_up(&mut self, buf: &mut Bytes) -> bool {
        while buf.len < buf.room() {
            match read_more(&mut self.input, buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => {
                    self.walker.blocks.stats.cut_short = Some("read error".to_string());
                    return true;
                }
            }
        }
        false
    }
}

impl Walker {
    /// Walks the whole records in `data` from `pos` on.
    fn walk(
        &mut self,
        data: &[u8],
        pos: &mut usize,
        frame: &mut u64,
        on_packet: &mut impl FnMut(&Packet<'_>, u64),
    ) -> Walked {
        loop {
            let rest = &data[*pos..];
            let parsed = match &mut self.format {
                Format::Legacy { header, parse } => {
                    if let Some(h) = header.take() {
                        let len = h.size();
                        self.blocks.packet(PcapBlockOwned::from(h), *frame);
                        *pos += len;
                        self.consumed += len as u64;
                        continue;
                    }
                    if rest.is_empty() {
                        return Walked::Partial;
                    }
                    parse(rest).map(|(rem, b)| (rem, PcapBlockOwned::from(b)))
                }
                Format::Ng { big_endian } => {
                    if rest.is_empty() {
                        return Walked::Partial;
                    }
                    let parse = if *big_endian {
                        parse_block_be
                    } else {
                        parse_block_le
                    };
                    parse(rest).map(|(rem, b)| {
                        if let Block::SectionHeader(shb) = &b {
                            *big_endian = shb.big_endian();
                        }
                        (rem, PcapBlockOwned::from(b))
                    })
                }
            };
            match parsed {
                Ok((rem, block)) => {
                    let len = rest.len() - rem.len();
                    if len > MAX_BLOCK {
                        self.too_large();
                        return Walked::Cut;
                    }
                    if let Some(p) = self.blocks.packet(block, *frame) {
                        *frame += 1;
                        on_packet(&p, self.consumed);
                    }
                    *pos += len;
                    self.consumed += len as u64;
                }
                Err(nom::Err::Incomplete(_)) => return Walked::Partial,
                Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                    self.blocks.stats.cut_short = Some(format!(
                        "corrupt record after byte {} ({}); stopped reading",
                        self.consumed,
                        describe(&e)
                    ));
                    return Walked::Cut;
                }
            }
        }
    }

    fn too_large(&mut self) {
        self.blocks.stats.cut_short = Some(format!(
            "record larger than {} MiB; stopped reading",
            MAX_BLOCK >> 20
        ));
    }
}

fn is_regular(meta: &Option<std::fs::Metadata>) -> bool {
    meta.as_ref().is_some_and(|m| m.is_file())
}

/// One `read` into the room left in `buf`; 0 at the end (or when full).
fn read_more(input: &mut impl Read, buf: &mut Bytes) -> io::Result<usize> {
    if buf.len == buf.room() {
        return Ok(0);
    }
    loop {
        match input.read(&mut buf.buf[buf.len..]) {
            Ok(n) => {
                buf.len += n;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What the blocks read so far say: the interfaces that describe packets,
/// and the counts.
#[derive(Default)]
struct Blocks {
    legacy: Option<Interface>,
    interfaces: Vec<Interface>,
    layout: Layout,
    stats: CaptureStats,
}

/// How records are framed, for reading the length a record claims before
/// all of it has arrived.
#[derive(Default, Clone, Copy)]
enum Layout {
    #[default]
    Unknown,
    /// Classic pcap: the captured length at byte 8 of a `header`-byte record header.
    Legacy { big_endian: bool, header: usize },
    /// pcapng: the block's total length at byte 4.
    Ng { big_endian: bool },
}

impl Blocks {
    /// The length of the record starting `data`, as its header claims.
    fn claimed_len(&self, data: &[u8]) -> Option<usize> {
        if !matches!(self.layout, Layout::Legacy { .. }) && data.starts_with(&SHB_MAGIC) {
            // A section header says its own byte order, which may differ
            // from the current section's.
            return section_header_len(data);
        }
        let (at, big_endian, extra) = match self.layout {
            Layout::Unknown => return None,
            Layout::Legacy { big_endian, header } => (8, big_endian, header),
            Layout::Ng { big_endian } => (4, big_endian, 0),
        };
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        let n = if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        };
        usize::try_from(n).ok()?.checked_add(extra)
    }

    /// The packet in `block`, if it holds one (counted).
    fn packet<'b>(&mut self, block: PcapBlockOwned<'b>, frame: u64) -> Option<Packet<'b>> {
        let p = packet_of(
            &mut self.legacy,
            &mut self.interfaces,
            &mut self.layout,
            &mut self.stats,
            block,
            frame,
        )?;
        let stats = &mut self.stats;
        stats.packets += 1;
        stats.bytes += p.data.len() as u64;
        if p.data.len() < p.orig_len as usize {
            stats.truncated_packets += 1;
        }
        Some(p)
    }
}

/// Turns one block into a packet, tracking the interfaces that describe them.
fn packet_of<'b>(
    legacy: &mut Option<Interface>,
    interfaces: &mut Vec<Interface>,
    layout: &mut Layout,
    stats: &mut CaptureStats,
    block: PcapBlockOwned<'b>,
    frame: u64,
) -> Option<Packet<'b>> {
    match block {
        PcapBlockOwned::LegacyHeader(h) => {
            *layout = Layout::Legacy {
                big_endian: h.is_bigendian(),
                header: if h.is_modified_format() { 24 } else { 16 },
            };
            *legacy = Some(Interface {
                link: LinkType(h.network.0 as u32),
                resolution: if h.is_nanosecond_precision() {
                    1_000_000_000
                } else {
                    1_000_000
                },
                offset_s: i64::from(h.thiszone),
            });
            None
        }
        PcapBlockOwned::Legacy(b) => {
            let iface = (*legacy)?;
            let ts_ns = ts_from_parts(u64::from(b.ts_sec), u64::from(b.ts_usec), &iface);
            Some(Packet {
                frame,
                ts_ns,
                link: iface.link,
                data: b.data,
                orig_len: b.origlen,
            })
        }
        PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
            *layout = Layout::Ng {
                big_endian: shb.big_endian(),
            };
            // Interface ids are scoped to their section.
            interfaces.clear();
            None
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
            interfaces.push(Interface {
                link: LinkType(idb.linktype.0 as u32),
                resolution: idb.ts_resolution().unwrap_or(1_000_000),
                offset_s: idb.if_tsoffset,
            });
            None
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
            let Some(iface) = interfaces.get(epb.if_id as usize).copied() else {
                stats.unknown_interface_packets += 1;
                return None;
            };
            let raw = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            let res = iface.resolution.max(1);
            let ts_ns = ts_from_parts(raw / res, raw % res, &iface);
            Some(Packet {
                frame,
                ts_ns,
                link: iface.link,
                data: &epb.data[..(epb.caplen as usize).min(epb.data.len())],
                orig_len: epb.origlen,
            })
        }
        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
            // Simple packet blocks belong to interface 0 and carry no timestamp.
            let Some(iface) = interfaces.first().copied() else {
                stats.unknown_interface_packets += 1;
                return None;
            };
            Some(Packet {
                frame,
                ts_ns: 0,
                link: iface.link,
                data: &spb.data[..(spb.origlen as usize).min(spb.data.len())],
                orig_len: spb.origlen,
            })
        }
        PcapBlockOwned::NG(_) => {
            stats.other_blocks += 1;
            None
        }
    }
}

/// Whole seconds plus a fraction in `iface.resolution` units → ns since epoch.
fn ts_from_parts(secs: u64, frac: u64, iface: &Interface) -> i64 {
    let res = iface.resolution.max(1);
    let frac_ns = match res {
        1_000_000_000 => frac,
        // Microseconds, the classic pcap default: no 128-bit division per packet.
        1_000_000 => frac.saturating_mul(1_000),
        _ => (u128::from(frac) * 1_000_000_000 / u128::from(res)) as u64,
    };
    let secs = (secs as i64).saturating_add(iface.offset_s);
    secs.saturating_mul(1_000_000_000)
        .saturating_add(frac_ns as i64)
}

fn describe(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::NomError(_, kind) => format!("{kind:?}"),
        PcapError::OwnedNomError(_, kind) => format!("{kind:?}"),
        PcapError::BufferTooSmall => "buffer too small".into(),
        PcapError::HeaderNotRecognized => "unrecognised block".into(),
        other => format!("{other:?}"),
    }
}

/// The block type of a pcapng Section Header Block (the same either way round).
const SHB_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Total length of the pcapng Section Header Block that `head` starts with.
fn section_header_len(head: &[u8]) -> Option<usize> {
    let h: &[u8; 12] = head.get(..12)?.try_into().ok()?;
    if h[..4] != SHB_MAGIC {
        return None;
    }
    let len = [h[4], h[5], h[6], h[7]];
    let len = match [h[8], h[9], h[10], h[11]] {
        [0x4d, 0x3c, 0x2b, 0x1a] => u32::from_le_bytes(len),
        [0x1a, 0x2b, 0x3c, 0x4d] => u32::from_be_bytes(len),
        _ => return None,
    };
    usize::try_from(len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy_header(magic: u32, link: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&magic.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&link.to_le_bytes());
        v
    }

    fn legacy_record(v: &mut Vec<u8>, sec: u32, frac: u32, data: &[u8], orig: u32) {
        v.extend_from_slice(&sec.to_le_bytes());
        v.extend_from_slice(&frac.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&orig.to_le_bytes());
        v.extend_from_slice(data);
    }

    type Seen = (Vec<(u64, i64, u32, usize)>, CaptureStats);

    fn read_with(mut r: CaptureReader<'_>) -> Seen {
        let mut out = Vec::new();
        r.for_each_packet(1, |p, _| {
            out.push((p.frame, p.ts_ns, p.link.0, p.data.len()))
        });
        (out, r.stats().clone())
    }

    /// Reads `bytes` from a temporary file (full-size reads).
    fn read_file(bytes: &[u8]) -> Seen {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tfwire-capture-{}-{}.pcap",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).expect("temp file");
        let seen = read_with(CaptureReader::open(&path).expect("capture header"));
        let _ = std::fs::remove_file(&path);
        seen
    }

    /// A pipe that hands out a few bytes per read, as a slow writer does.
    struct Trickle {
        data: io::Cursor<Vec<u8>>,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.step = self.step % 7 + 1;
            let n = buf.len().min(self.step);
            self.data.read(&mut buf[..n])
        }
    }

    /// Reads `bytes` from a file and as a trickling stream: both must see
    /// the same packets and counts, whatever the read sizes.
    fn read_all(bytes: Vec<u8>) -> Seen {
        let whole = read_file(&bytes);
        let trickled = read_with(
            CaptureReader::from_reader(
                "t".into(),
                Trickle {
                    data: io::Cursor::new(bytes),
                    step: 0,
                },
            )
            .expect("capture header"),
        );
        assert_eq!(whole.0, trickled.0, "packets, file vs trickled stream");
        assert_eq!(
            format!("{:?}", whole.1),
            format!("{:?}", trickled.1),
            "counts, file vs trickled stream"
        );
        whole
    }

    #[test]
    fn legacy_microsecond_and_nanosecond() {
        let mut us = legacy_header(0xa1b2_c3d4, 1);
        legacy_record(&mut us, 10, 5, &[0u8; 60], 60);
        let (p, _) = read_all(us);
        assert_eq!(p, vec![(1, 10_000_005_000, 1, 60)]);

        let mut ns = legacy_header(0xa1b2_3c4d, 101);
        legacy_record(&mut ns, 10, 5, &[0u8; 40], 100);
        let (p, st) = read_all(ns);
        assert_eq!(p, vec![(1, 10_000_000_005, 101, 40)]);
        assert_eq!(st.truncated_packets, 1);
    }

    #[test]
    fn legacy_big_endian() {
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2_c3d4u32.to_be_bytes());
        v.extend_from_slice(&2u16.to_be_bytes());
        v.extend_from_slice(&4u16.to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&65535u32.to_be_bytes());
        v.extend_from_slice(&113u32.to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(&3u32.to_be_bytes());
        v.extend_from_slice(&[1, 2, 3]);
        let (p, _) = read_all(v);
        assert_eq!(p, vec![(1, 7_000_001_000, 113, 3)]);
    }

    #[test]
    fn cut_in_the_middle_of_a_record() {
        let mut v = legacy_header(0xa1b2_c3d4, 1);
        legacy_record(&mut v, 1, 0, &[0u8; 60], 60);
        legacy_record(&mut v, 2, 0, &[0u8; 60], 60);
        v.truncate(v.len() - 10);
        let (p, st) = read_all(v);
        assert_eq!(p.len(), 1);
        assert!(st.cut_short.is_some());
    }

    /// Where reading stops, and what it says.
    #[test]
    fn reading_says_why_it_stopped() {
        let mut v = legacy_header(0xa1b2_c3d4, 1);
        legacy_record(&mut v, 1, 0, &[0u8; 60], 60);
        legacy_record(&mut v, 2, 0, &[0u8; 60], 60);
        v.truncate(v.len() - 10);
        let (p, st) = read_all(v.clone());
        assert_eq!(p.len(), 1);
        assert_eq!(
            st.cut_short.as_deref(),
            Some("file ends inside a record (66 trailing bytes ignored)")
        );

        // A record claiming 2 GiB: refused at the size limit, not read.
        let mut v = legacy_header(0xa1b2_c3d4, 1);
        legacy_record(&mut v, 1, 0, &[0u8; 60], 60);
        let at = v.len();
        legacy_record(&mut v, 2, 0, &[0u8; 60], 60);
        v[at + 8..at + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let (p, st) = read_all(v.clone());
        assert_eq!(p.len(), 1);
        assert_eq!(
            st.cut_short.as_deref(),
            Some("record larger than 256 MiB; stopped reading")
        );

        // pcapng: a block whose trailing length disagrees with its header.
        let mut v = Vec::new();
        let shb: [u32; 7] = [
            0x0a0d_0d0a,
            28,
            0x1a2b_3c4d,
            1,
            0xffff_ffff,
            0xffff_ffff,
            28,
        ];
        for w in shb {
            v.extend_from_slice(&w.to_le_bytes());
        }
        let idb: [u32; 5] = [1, 20, 1, 0, 20];
        for w in idb {
            v.extend_from_slice(&w.to_le_bytes());
        }
        let clean = v.len();
        for w in [6u32, 32, 0, 0, 0, 0, 0, 31] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        let (p, st) = read_all(v.clone());
        assert!(p.is_empty());
        let why = st.cut_short.as_deref().unwrap_or("");
        assert!(
            why.starts_with(&format!("corrupt record after byte {clean} (")),
            "{why}"
        );
    }

    /// A pcapng packet whose captured length runs past its own block (the
    /// parser then asks for more input), followed by megabytes: reading stops
    /// there at once instead of waiting for bytes that cannot help (this
    /// used to reread the tail a byte at a time, for hours on a few MB).
    #[test]
    fn packet_longer_than_its_block_stops_reading() {
        let mut v = Vec::new();
        ng_section(&mut v, false, 2, 60);
        let at = v.len() - (12 + 20 + 60);
        // The second packet's captured length (byte 20 of its block): 61.
        v[at + 20..at + 24].copy_from_slice(&61u32.to_le_bytes());
        let clean = at;
        v.extend(std::iter::repeat_n(0x5a, 3 << 20));
        let started = std::time::Instant::now();
        let (p, st) = read_all(v);
        assert_eq!(p.len(), 1);
        assert_eq!(
            st.cut_short.as_deref(),
            Some(
                format!(
                    "corrupt record after byte {clean} (its contents run past the 92 bytes it claims); stopped reading"
                )
                .as_str()
            )
        );
        // Generous: the old behaviour took hours on this input.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    /// Records larger than the initial buffer (tcpdump's snaplen allows
    /// 262,144 bytes) are read whole; a short file claiming a 200 MB record
    /// ends where the bytes end.
    #[test]
    fn records_larger_than_the_buffer() {
        let mut v = legacy_header(0xa1b2_c3d4, 1);
        let big: Vec<u8> = (0..600_000u32).map(|i| i as u8).collect();
        legacy_record(&mut v, 1, 0, &big, 600_000);
        legacy_record(&mut v, 2, 0, &[7u8; 60], 60);
        let (p, st) = read_all(v);
        assert_eq!(
            p,
            vec![(1, 1_000_000_000, 1, 600_000), (2, 2_000_000_000, 1, 60)]
        );
        assert_eq!(st.cut_short, None);

        let mut v = legacy_header(0xa1b2_c3d4, 1);
        legacy_record(&mut v, 1, 0, &[0u8; 60], 60);
        let at = v.len();
        legacy_record(&mut v, 2, 0, &[0u8; 500_000], 500_000);
        v[at + 8..at + 12].copy_from_slice(&200_000_000u32.to_le_bytes());
        let (p, st) = read_all(v);
        assert_eq!(p.len(), 1);
        assert_eq!(
            st.cut_short.as_deref(),
            Some("file ends inside a record (500016 trailing bytes ignored)")
        );
    }

    /// Records of every size straddle the 256 KiB chunk boundaries of a
    /// file at varied offsets: file and trickled stream see the same packets.
    #[test]
    fn records_straddling_chunk_boundaries() {
        let mut v = legacy_header(0xa1b2_c3d4, 1);
        let mut want = Vec::new();
        let mut size = 1usize;
        for i in 0..1200u32 {
            size = (size * 7 + 13) % 2100;
            let data: Vec<u8> = (0..size).map(|b| (b as u32 ^ i) as u8).collect();
            legacy_record(&mut v, i, 0, &data, size as u32);
            want.push((u64::from(i) + 1, i64::from(i) * 1_000_000_000, 1, size));
        }
        assert!(v.len() > 4 * CHUNK, "{} bytes", v.len());
        let (p, st) = read_all(v);
        assert_eq!(p, want);
        assert_eq!(st.cut_short, None);
    }

    /// A pcapng block in either byte order, padded to 4 bytes.
    fn ng_block(v: &mut Vec<u8>, be: bool, ty: u32, body: &[u8]) {
        let w = |v: &mut Vec<u8>, x: u32| {
            v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() })
        };
        let len = 12 + body.len().div_ceil(4) * 4;
        w(v, ty);
        w(v, len as u32);
        v.extend_from_slice(body);
        v.resize(v.len() + (len - 12 - body.len()), 0);
        w(v, len as u32);
    }

    /// Section header, interface (Ethernet) and `packets` packet blocks of
    /// `size` bytes, in one byte order.
    fn ng_section(v: &mut Vec<u8>, be: bool, packets: usize, size: usize) {
        let w16 = |x: u16| if be { x.to_be_bytes() } else { x.to_le_bytes() };
        let w32 = |x: u32| if be { x.to_be_bytes() } else { x.to_le_bytes() };
        let mut shb = Vec::new();
        shb.extend_from_slice(&w32(0x1a2b_3c4d));
        shb.extend_from_slice(&w16(1));
        shb.extend_from_slice(&w16(0));
        shb.extend_from_slice(&[0xff; 8]);
        ng_block(v, be, 0x0a0d_0d0a, &shb);
        let mut idb = Vec::new();
        idb.extend_from_slice(&w16(1));
        idb.extend_from_slice(&w16(0));
        idb.extend_from_slice(&w32(0));
        ng_block(v, be, 1, &idb);
        for i in 0..packets {
            let mut epb = Vec::new();
            for x in [0, 0, i as u32, size as u32, size as u32] {
                epb.extend_from_slice(&w32(x));
            }
            epb.extend(std::iter::repeat_n(i as u8, size));
            ng_block(v, be, 6, &epb);
        }
    }

    /// A section of the other byte order whose header is cut by a chunk
    /// boundary (or arrives in pieces): its length is read in its own byte
    /// order, not taken for a record larger than 256 MiB.
    #[test]
    fn byte_order_switch_across_a_chunk_boundary() {
        let mut v = Vec::new();
        ng_section(&mut v, false, 1, 60);
        // Fill with packets up to just before the boundary, then pad the
        // last one so the big-endian section header starts 12 bytes before it.
        while v.len() + 2000 < CHUNK {
            let mut epb = Vec::new();
            for x in [0u32, 0, 0, 1500, 1500] {
                epb.extend_from_slice(&x.to_le_bytes());
            }
            epb.extend(std::iter::repeat_n(1u8, 1500));
            ng_block(&mut v, false, 6, &epb);
        }
        let pad = CHUNK - 12 - v.len() - 32;
        let mut epb = Vec::new();
        for x in [0u32, 0, 0, pad as u32, pad as u32] {
            epb.extend_from_slice(&x.to_le_bytes());
        }
        epb.extend(std::iter::repeat_n(2u8, pad));
        ng_block(&mut v, false, 6, &epb);
        assert_eq!(v.len(), CHUNK - 12);
        let before = read_all(v.clone()).0.len();
        ng_section(&mut v, true, 3, 80);
        let (p, st) = read_all(v);
        assert_eq!(st.cut_short, None);
        assert_eq!(p.len(), before + 3);
        assert_eq!(p.last().map(|p| p.3), Some(80));
    }

    /// A first section header claiming 4 GB is refused at once (no buffer
    /// grows towards it); one cut short is not a capture.
    #[test]
    fn first_section_header_claims() {
        let mut v = Vec::new();
        ng_section(&mut v, false, 2, 60);
        v[4..8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let (p, st) = read_all(v);
        assert!(p.is_empty());
        assert_eq!(
            st.cut_short.as_deref(),
            Some("record larger than 256 MiB; stopped reading")
        );

        let mut v = Vec::new();
        ng_section(&mut v, false, 0, 0);
        v.truncate(20);
        let r = CaptureReader::from_reader("x".into(), io::Cursor::new(v));
        assert!(matches!(r, Err(CaptureError::NotACapture { .. })));
    }

    /// A buffer grown for a large record grows no further than the record
    /// claims, and goes back to one chunk after it.
    #[test]
    fn grown_buffer_follows_the_record() {
        /// Notes the largest read asked of it.
        struct Asked<'a>(io::Cursor<Vec<u8>>, &'a mut usize);
        impl Read for Asked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                *self.1 = (*self.1).max(buf.len());
                self.0.read(buf)
            }
        }
        let mut v = legacy_header(0xa1b2_c3d4, 1);
        legacy_record(&mut v, 1, 0, &[3u8; 600_000], 600_000);
        let mut largest = 0;
        let mut r =
            CaptureReader::from_reader("x".into(), Asked(io::Cursor::new(v.clone()), &mut largest))
                .expect("capture header");
        let mut sizes = Vec::new();
        r.for_each_packet(1, |p, _| sizes.push(p.data.len()));
        drop(r);
        assert_eq!(sizes, vec![600_000]);
        // Buffers of 256 KiB, 512 KiB, then the record's 600,016 bytes:
        // doubling to 1 MiB would have asked for 512 KiB at once.
        assert_eq!(largest, CHUNK);

        let path = std::env::temp_dir().join(format!("tfwire-grow-{}.pcap", std::process::id()));
        for i in 0..2000 {
            legacy_record(&mut v, i, 0, &[4u8; 300], 300);
        }
        std::fs::write(&path, &v).expect("temp file");
        let mut r = CaptureReader::open(&path).expect("capture header");
        let n = r.for_each_packet(1, |_, _| {}) - 1;
        let _ = std::fs::remove_file(&path);
        assert_eq!(n, 2001);
        assert_eq!(r.chunk.room(), CHUNK);
    }

    /// A read that fails stops reading with "read error", which the partial
    /// record left behind does not overwrite.
    #[test]
    fn read_error_is_reported() {
        struct Failing(io::Cursor<Vec<u8>>);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.read(buf)? {
                    0 => Err(io::Error::other("disk gone")),
                    n => Ok(n),
                }
            }
        }
        let mut v = legacy_header(0xa1b2_c3d4, 1);
        legacy_record(&mut v, 1, 0, &[0u8; 60], 60);
        legacy_record(&mut v, 2, 0, &[0u8; 60], 60);
        v.truncate(v.len() - 10);
        let (p, st) = read_with(
            CaptureReader::from_reader("x".into(), Failing(io::Cursor::new(v))).expect("header"),
        );
        assert_eq!(p.len(), 1);
        assert_eq!(st.cut_short.as_deref(), Some("read error"));
    }

    #[test]
    fn not_a_capture() {
        let r = CaptureReader::from_reader(
            "x".into(),
            io::Cursor::new(b"hello world, this is text not pcap, long enough to sniff".to_vec()),
        );
        assert!(matches!(r, Err(CaptureError::NotACapture { .. })));
        let r = CaptureReader::from_reader("x".into(), io::Cursor::new(Vec::new()));
        assert!(matches!(r, Err(CaptureError::Empty { .. })));
    }

    /// pcapng with two interfaces of different link types and resolutions.
    #[test]
    fn pcapng_two_interfaces() {
        fn block(v: &mut Vec<u8>, ty: u32, body: &[u8]) {
            let len = 12 + body.len().div_ceil(4) * 4;
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&(len as u32).to_le_bytes());
            v.extend_from_slice(body);
            v.resize(v.len() + (len - 12 - body.len()), 0);
            v.extend_from_slice(&(len as u32).to_le_bytes());
        }
        let mut v = Vec::new();
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut v, 0x0a0d_0d0a, &shb);
        // if 0: Ethernet, default µs.
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        block(&mut v, 1, &idb);
        // if 1: SLL2 with if_tsresol = 9 (ns).
        let mut idb = Vec::new();
        idb.extend_from_slice(&276u16.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&9u16.to_le_bytes());
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 0, 0]);
        idb.extend_from_slice(&[0, 0, 0, 0]);
        block(&mut v, 1, &idb);
        for (ifid, ts) in [(0u32, 2_000_001u64), (1, 3_000_000_007)] {
            let mut epb = Vec::new();
            epb.extend_from_slice(&ifid.to_le_bytes());
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(ts as u32).to_le_bytes());
            epb.extend_from_slice(&5u32.to_le_bytes());
            epb.extend_from_slice(&5u32.to_le_bytes());
            epb.extend_from_slice(&[9; 5]);
            block(&mut v, 6, &epb);
        }
        let (p, _) = read_all(v);
        assert_eq!(
            p,
            vec![(1, 2_000_001_000, 1, 5), (2, 3_000_000_007, 276, 5)]
        );
    }

    /// Returns at most `step` bytes per read, like a pipe.
    struct Dribble {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// Found by fuzzing (fuzz target `capture`): dumpcap writes a Section
    /// Header Block of ~170 bytes (hardware, OS and application options);
    /// read from a pipe in small pieces, the format check saw only part of it
    /// and called the capture "not a pcap or pcapng capture".
    #[test]
    fn pcapng_section_header_longer_than_first_read() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/grpc_compressed.pcap");
        let whole = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/grpc_concurrent.pcapng"),
        )
        .expect("fixture");
        assert!(
            section_header_len(&whole).is_some_and(|n| n > 64),
            "fixture SHB has options"
        );
        let (expected, _) = read_all(whole.clone());
        assert!(!expected.is_empty());
        for step in [1, 7, 64, 89, 163] {
            let r = Dribble {
                data: whole.clone(),
                pos: 0,
                step,
            };
            let mut r = CaptureReader::from_reader("pipe".into(), r)
                .unwrap_or_else(|e| panic!("{step}-byte reads: {e}"));
            let mut got = Vec::new();
            r.for_each_packet(1, |p, _| {
                got.push((p.frame, p.ts_ns, p.link.0, p.data.len()))
            });
            assert_eq!(got, expected, "{step}-byte reads");
        }
        // Legacy pcap needs only its 24-byte header.
        let legacy = std::fs::read(fixture).expect("fixture");
        let r = Dribble {
            data: legacy,
            pos: 0,
            step: 5,
        };
        assert!(CaptureReader::from_reader("pipe".into(), r).is_ok());
    }
}
