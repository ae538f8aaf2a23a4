//! TCP reassembly of one direction, driven by segments, ACKs and flushes
//! described by the fuzz input. Checks the delivery contract: deliveries tile
//! the stream from offset 0 without overlap, nothing follows End, and the
//! buffer limits hold after every call.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::net::{Delivery, Reassembler, ReassemblyLimits};
use tfwire_fuzz::Input;

struct Check {
    next: u64,
    ended: bool,
}

impl Check {
    fn see(&mut self, d: Delivery<'_>) {
        assert!(!self.ended, "delivery after End: {d:?}");
        match d {
            Delivery::Data { offset, bytes, .. } => {
                assert_eq!(offset, self.next);
                assert!(!bytes.is_empty());
                self.next += bytes.len() as u64;
            }
            Delivery::Gap { offset, len } => {
                assert_eq!(offset, self.next);
                assert!(len > 0);
                self.next += len;
            }
            Delivery::End { .. } => self.ended = true,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let l = inp.u8();
    let limits = if l == 0 {
        ReassemblyLimits::default()
    } else {
        ReassemblyLimits {
            max_buffered_bytes: usize::from(l & 0x0f) << 8,
            max_segments: usize::from(l >> 4),
        }
    };
    let mut r = Reassembler::new(limits);
    let mut check = Check {
        next: 0,
        ended: false,
    };
    let mut sender_next = inp.u32();
    let mut frame = 0u64;
    let pattern: Vec<u8> = (0..=255u8).collect();
    while !inp.is_empty() {
        let op = inp.u8();
        frame += 1;
        let mut sink = |d: Delivery<'_>| check.see(d);
        match op & 7 {
            5 => {
                let delta = inp.u16() as i16 as i32;
                r.ack(sender_next.wrapping_add(delta as u32), &mut sink);
            }
            6 => r.flush(&mut sink),
            kind => {
                let seq = if kind == 7 {
                    inp.u32()
                } else {
                    sender_next.wrapping_add(inp.u16() as i16 as i32 as u32)
                };
                let len = usize::from(inp.u8());
                // Payload bytes from the input, or a pattern when it ran out.
                let mut payload = inp.bytes(len).to_vec();
                if payload.len() < len && op & 0x80 != 0 {
                    payload.extend_from_slice(&pattern[..len - payload.len()]);
                }
                let syn = op & 0x08 != 0;
                let fin = op & 0x10 != 0;
                let rst = op & 0x60 == 0x60;
                r.segment(seq, &payload, syn, fin, rst, frame, frame as i64, &mut sink);
                let end = seq.wrapping_add(payload.len() as u32);
                if (end.wrapping_sub(sender_next) as i32) > 0 {
                    sender_next = end;
                }
            }
        }
        assert!(r.buffered_bytes() <= limits.max_buffered_bytes);
        assert!(r.buffered_segments() <= limits.max_segments);
        assert_eq!(r.offset(), check.next);
        assert_eq!(r.is_ended(), check.ended);
    }
    r.flush(&mut |d: Delivery<'_>| check.see(d));
    assert_eq!(r.buffered_bytes(), 0);
    assert_eq!(r.offset(), check.next);
});
