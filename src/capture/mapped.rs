//! Capture files read through a memory map: packets are borrowed straight
//! from the page cache, with no copy into a read buffer, and every shard
//! thread can walk the same file for the price of its record headers.
//!
//! Pages already walked are dropped from the process (`MADV_DONTNEED`) as the
//! reader moves on, so resident memory stays flat whatever the file size;
//! the kernel keeps them in the page cache for the next run.
//!
//! A file that shrinks while mapped makes the next access fault (SIGBUS).
//! Captures do not shrink unless something rewrites them (a `tcpdump -W`
//! ring buffer wrapping around), so that case ends the run with a message
//! from a signal handler instead of a crash report.
//!
//! The only module allowed `unsafe`: mapping a file, releasing walked pages,
//! and the signal handler have no safe interface.
#![allow(unsafe_code)]

use std::fs::File;

use memmap2::{Advice, Mmap, UncheckedAdvice};
use pcap_parser::nom::{self, Needed};
use pcap_parser::pcap::{
    parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified, parse_pcap_header,
    LegacyPcapBlock, PcapHeader,
};
use pcap_parser::pcapng::{parse_block_be, parse_block_le, parse_sectionheaderblock, Block};
use pcap_parser::{PcapBlockOwned, PcapError};

/// How far ahead of the reader the file is prefetched into the CPU cache.
const PREFETCH_AHEAD: usize = 8 << 10;
/// Walked bytes are released from the process in steps of this size.
const RELEASE_STEP: usize = 4 << 20;

type LegacyParse = fn(&[u8]) -> nom::IResult<&[u8], LegacyPcapBlock<'_>, PcapError<&[u8]>>;

enum Format {
    /// Classic pcap; the file header is handed out once as a block.
    Legacy {
        header: PcapHeader,
        header_sent: bool,
        parse: LegacyParse,
    },
    /// pcapng; the byte order follows the current section.
    Ng { big_endian: bool },
}

/// What the next step of the walk found.
pub enum Next<'a> {
    /// A block and its length in the file.
    Block(PcapBlockOwned<'a>, usize),
    End,
    /// Reading stops here; why.
    Cut(CutReason<'a>),
}

pub enum CutReason<'a> {
    /// The file ends inside a record; bytes left.
    Truncated(usize),
    /// A record claims more than `max_block` bytes.
    TooLarge,
    Corrupt(PcapError<&'a [u8]>),
}

pub struct MappedCapture {
    map: Mmap,
    pos: usize,
    released: usize,
    /// Bytes asked into the CPU cache up to here.
    prefetched: usize,
    format: Format,
}

/// Why a file was not mapped (the caller then reads it as a stream, which
/// reports the same problems the usual way).
pub enum Unmapped {
    Empty,
    NotACapture,
    Unavailable,
}

impl MappedCapture {
    pub fn open(file: &File) -> Result<MappedCapture, Unmapped> {
        let len = file.metadata().map_err(|_| Unmapped::Unavailable)?.len();
        if len == 0 {
            return Err(Unmapped::Empty);
        }
        install_sigbus_handler();
        // SAFETY: the map is read-only and private to this reader; a file
        // truncated underneath it faults (SIGBUS), which the handler turns
        // into a clean exit rather than undefined behaviour being observed.
        let map = unsafe { Mmap::map(file) }.map_err(|_| Unmapped::Unavailable)?;
        let _ = map.advise(Advice::Sequential);
        let format = if parse_sectionheaderblock(&map).is_ok() {
            Format::Ng { big_endian: false }
        } else {
            match parse_pcap_header(&map) {
                Ok((_, header)) => {
                    let parse: LegacyParse = if header.is_modified_format() {
                        parse_pcap_frame_modified
                    } else if header.is_bigendian() {
                        parse_pcap_frame_be
                    } else {
                        parse_pcap_frame
                    };
                    Format::Legacy {
                        header,
                        header_sent: false,
                        parse,
                    }
                }
                Err(_) => return Err(Unmapped::NotACapture),
            }
        };
        Ok(MappedCapture {
            map,
            pos: 0,
            released: 0,
            prefetched: 0,
            format,
        })
    }

    /// The block at the current position (not consumed).
    pub fn next(&mut self, max_block: usize) -> Next<'_> {
        let data = &self.map[self.pos..];
        let parsed = match &mut self.format {
            Format::Legacy {
                header,
                header_sent,
                parse,
            } => {
                if !*header_sent {
                    *header_sent = true;
                    return Next::Block(PcapBlockOwned::from(header.clone()), header.size());
                }
                if data.is_empty() {
                    return Next::End;
                }
                parse(data).map(|(rem, b)| (rem, PcapBlockOwned::from(b)))
            }
            Format::Ng { big_endian } => {
                if data.is_empty() {
                    return Next::End;
                }
                let parse = if *big_endian {
                    parse_block_be
                } else {
                    parse_block_le
                };
                parse(data).map(|(rem, b)| {
                    if let Block::SectionHeader(shb) = &b {
                        *big_endian = shb.big_endian();
                    }
                    (rem, PcapBlockOwned::from(b))
                })
            }
        };
        match parsed {
            Ok((rem, block)) => {
                let len = data.len() - rem.len();
                if len > max_block {
                    Next::Cut(CutReason::TooLarge)
                } else {
                    Next::Block(block, len)
                }
            }
            Err(nom::Err::Incomplete(Needed::Size(n))) if data.len() + n.get() > max_block => {
                Next::Cut(CutReason::TooLarge)
            }
            Err(nom::Err::Incomplete(_)) => Next::Cut(CutReason::Truncated(data.len())),
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Next::Cut(CutReason::Corrupt(e)),
        }
    }

    /// Moves past `n` bytes; walked pages are released now and then.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.map.len());
        // Of most packets only the headers are read, a few bytes a record,
        // which the hardware prefetcher does not see as a stream: every
        // record header would wait on memory. Ask for the file a little
        // ahead of the reader, line by line, as it moves.
        let until = (self.pos + PREFETCH_AHEAD).min(self.map.len());
        let from = self.prefetched.max(self.pos);
        if until > from {
            let base = self.map.as_ptr();
            for at in (from..until).step_by(64) {
                prefetch(base.wrapping_add(at));
            }
            self.prefetched = until;
        }
        if self.pos - self.released >= RELEASE_STEP {
            let page = page_size();
            let upto = self.pos / page * page;
            if upto > self.released {
                // SAFETY: nothing borrows the map below `pos` any more (packets
                // are lent to a callback that has returned), and dropping the
                // pages of a read-only file map only makes a later access read
                // them again from the page cache.
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        UncheckedAdvice::DontNeed,
                        self.released,
                        upto - self.released,
                    )
                };
                self.released = upto;
            }
        }
    }
}

#[inline]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

fn install_sigbus_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler only calls async-signal-safe functions (write, _exit).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

extern "C" fn on_sigbus(_: libc::c_int) {
    const MSG: &[u8] =
        b"tfwire: a capture file shrank while it was being read (rewritten or truncated); stopped\n";
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(2);
    }
}
