//! Capture reading: pcap and pcapng from bytes, whole and dribbled in small
//! reads (as a pipe from tcpdump delivers them). Both must yield the same
//! packets.
#![no_main]

use std::io::{self, Cursor, Read};

use libfuzzer_sys::fuzz_target;
use tfwire::capture::CaptureReader;

/// A reader that returns at most `step` bytes per call.
struct Dribble<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

type Seen = (Vec<(u64, i64, u32, Vec<u8>, u32)>, u64, bool);

fn read(r: impl Read + Send) -> Option<Seen> {
    let mut reader = CaptureReader::from_reader("fuzz".into(), r).ok()?;
    let mut packets = Vec::new();
    let mut last_consumed = 0;
    let next = reader.for_each_packet(1, |p, consumed| {
        assert!(consumed >= last_consumed, "progress went backwards");
        last_consumed = consumed;
        assert!(p.data.len() <= 256 << 20);
        packets.push((p.frame, p.ts_ns, p.link.0, p.data.to_vec(), p.orig_len));
    });
    assert_eq!(next, 1 + packets.len() as u64);
    assert_eq!(reader.stats().packets, packets.len() as u64);
    Some((packets, next, reader.stats().cut_short.is_some()))
}

fuzz_target!(|data: &[u8]| {
    let whole = read(Cursor::new(data));
    // 1..=97-byte reads; the step comes from the length so the bytes stay a
    // plain capture file (the corpus is real pcap/pcapng files).
    let step = 1 + data.len() % 97;
    let dribbled = read(Dribble { data, step });
    match (&whole, &dribbled) {
        (Some(a), Some(b)) => assert_eq!(a, b, "read in {step}-byte pieces"),
        (None, None) => {}
        // The format is sniffed from the first bytes; FillFirst makes that
        // independent of how the reads are cut.
        _ => panic!("opened one way but not the other (step {step})"),
    }
});
