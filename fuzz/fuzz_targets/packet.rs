//! Packet slicing: link layer → IP → TCP for every link type tfwire reads,
//! plus one it does not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::capture::LinkType;
use tfwire::net::tcp_segment;

const LINKS: [u32; 11] = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let link = LinkType(LINKS[usize::from(sel) % LINKS.len()]);
    if let Ok(seg) = tcp_segment(link, pkt) {
        // The payload is a slice of the packet, never more.
        let base = pkt.as_ptr() as usize;
        let p = seg.payload.as_ptr() as usize;
        assert!(seg.payload.is_empty() || (p >= base && p + seg.payload.len() <= base + pkt.len()));
    }
});
