//! A small pcapng writer: one Section Header Block, one Interface Description
//! Block, then an Enhanced Packet Block per packet (pcapng, IETF
//! draft-ietf-opsawg-pcapng §4.1, §4.2, §4.3). Little-endian, nanosecond
//! timestamps (`if_tsresol` = 9).
//!
//! Every block is assembled first and handed to the writer in one
//! `write_all`: over a `BufWriter` the file then only ever grows by whole
//! blocks, so a capture cut short (Ctrl-C twice, SIGKILL, a full disk) still
//! reads to its last complete packet.

use std::io::{self, Write};

use crate::capture::LinkType;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

const OPT_END: u16 = 0;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

/// Writes packets of one interface to a pcapng stream.
pub struct PcapngWriter<W: Write> {
    out: W,
    block: Vec<u8>,
    packets: u64,
}

impl<W: Write> PcapngWriter<W> {
    /// Writes the section and interface headers. `snaplen` 0 means unlimited.
    pub fn new(
        out: W,
        link: LinkType,
        snaplen: u32,
        if_name: Option<&str>,
        application: &str,
    ) -> io::Result<Self> {
        let mut w = PcapngWriter {
            out,
            block: Vec::with_capacity(1 << 16),
            packets: 0,
        };

        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes()); // major version
        body.extend_from_slice(&0u16.to_le_bytes()); // minor version
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
        push_option(&mut body, SHB_USERAPPL, application.as_bytes());
        push_option(&mut body, OPT_END, &[]);
        w.block(SHB, &body)?;

        let link16 = u16::try_from(link.0).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("link type {} does not fit a pcapng IDB", link.0),
            )
        })?;
        let mut body = Vec::new();
        body.extend_from_slice(&link16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes()); // reserved
        body.extend_from_slice(&snaplen.to_le_bytes());
        if let Some(name) = if_name {
            push_option(&mut body, IF_NAME, name.as_bytes());
        }
        push_option(&mut body, IF_TSRESOL, &[9]);
        push_option(&mut body, OPT_END, &[]);
        w.block(IDB, &body)?;
        Ok(w)
    }

    /// Appends one packet (captured bytes `data` of an `orig_len`-byte frame)
    /// taken at `ts_ns` nanoseconds since the Unix epoch.
    pub fn packet(&mut self, ts_ns: i64, data: &[u8], orig_len: u32) -> io::Result<()> {
        let caplen = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet over 4 GiB"))?;
        let ts = u64::try_from(ts_ns).unwrap_or(0);
        let total = 32 + padded(data.len());
        let total32 = u32::try_from(total)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "packet over 4 GiB"))?;
        let b = &mut self.block;
        b.clear();
        b.extend_from_slice(&EPB.to_le_bytes());
        b.extend_from_slice(&total32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        b.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts as u32).to_le_bytes());
        b.extend_from_slice(&caplen.to_le_bytes());
        b.extend_from_slice(&orig_len.max(caplen).to_le_bytes());
        b.extend_from_slice(data);
        b.resize(b.len() + padded(data.len()) - data.len(), 0);
        b.extend_from_slice(&total32.to_le_bytes());
        self.out.write_all(b)?;
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    fn block(&mut self, kind: u32, body: &[u8]) -> io::Result<()> {
        let total = u32::try_from(12 + body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block too large"))?;
        let b = &mut self.block;
        b.clear();
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&total.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&total.to_le_bytes());
        self.out.write_all(b)
    }
}

fn padded(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// One option: code, length, value padded to 32 bits.
fn push_option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    // Option values are at most 65535 bytes; longer names are cut.
    let value = &value[..value.len().min(u16::MAX as usize - 3)];
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    body.resize(body.len() + padded(value.len()) - value.len(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureReader;

    #[test]
    fn written_file_reads_back_with_timestamps_lengths_and_link_type() {
        let mut w = PcapngWriter::new(Vec::new(), LinkType::ETHERNET, 65535, Some("lo"), "test")
            .expect("header");
        let ts = 1_790_000_000_123_456_789i64;
        w.packet(ts, &[1, 2, 3, 4, 5], 60).expect("packet");
        w.packet(ts + 1, &[9; 8], 8).expect("packet");
        assert_eq!(w.packets(), 2);
        let bytes = w.into_inner();
        assert_eq!(bytes.len() % 4, 0);

        let mut r =
            CaptureReader::from_reader("mem".into(), io::Cursor::new(bytes)).expect("a capture");
        let mut seen = Vec::new();
        r.for_each_packet(1, |p, _| {
            seen.push((p.frame, p.ts_ns, p.link, p.data.to_vec(), p.orig_len))
        });
        assert!(r.stats().cut_short.is_none(), "{:?}", r.stats().cut_short);
        assert_eq!(
            seen,
            vec![
                (1, ts, LinkType::ETHERNET, vec![1, 2, 3, 4, 5], 60),
                (2, ts + 1, LinkType::ETHERNET, vec![9; 8], 8),
            ]
        );
    }

    #[test]
    fn a_file_cut_between_blocks_still_reads() {
        let mut w =
            PcapngWriter::new(Vec::new(), LinkType::LINUX_SLL2, 0, None, "test").expect("header");
        w.packet(1_000, &[0; 20], 20).expect("packet");
        let one = w.get_ref().len();
        w.packet(2_000, &[0; 20], 20).expect("packet");
        let mut bytes = w.into_inner();
        bytes.truncate(one);
        let mut r =
            CaptureReader::from_reader("mem".into(), io::Cursor::new(bytes)).expect("capture");
        let mut n = 0;
        r.for_each_packet(1, |_, _| n += 1);
        assert_eq!(n, 1);
        assert!(r.stats().cut_short.is_none());
    }
}
