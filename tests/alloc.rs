//! Heap allocations on the hot path: packets of an established flow that only
//! carry more bytes of a message (TCP in order, HTTP/2 DATA, a large Predict
//! tensor streaming past) must not allocate. Counted per thread by a wrapper
//! around the system allocator, so other tests running alongside do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tfwire::capture::Packet;
use tfwire::pipeline::{Analyzer, Config};
use tfwire::tfserving::Exchange;

use crate::support::load;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// A test-only allocator: the counter is a const-initialised thread local, which
// never allocates itself.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn data_packets_of_an_established_flow_do_not_allocate() {
    // Two Predict calls with a 3 MB tensor each: most packets are full
    // segments in the middle of a request.
    let packets = load("grpc_large.pcapng");
    let mut exchanges = Vec::new();
    let mut per_packet = Vec::with_capacity(packets.len());
    {
        let mut analyzer = Analyzer::new(Config::default(), |ex: Exchange| {
            exchanges.push(ex);
            true
        });
        for (i, p) in packets.iter().enumerate() {
            let packet = Packet {
                frame: i as u64 + 1,
                ts_ns: p.ts_ns,
                link: p.link,
                data: &p.data,
                orig_len: p.data.len() as u32,
            };
            let before = allocations();
            analyzer.packet(&packet);
            per_packet.push((p.data.len(), allocations() - before));
        }
        analyzer.finish();
    }
    assert_eq!(exchanges.len(), 2);
    assert!(exchanges.iter().all(|e| e.status.ok && e.inputs.len() == 1));
    assert_eq!(exchanges[0].inputs[0].shape, Some(vec![5, 224, 224, 3]));

    // Full-size segments after the connection's start: the message bodies.
    let full: Vec<u64> = per_packet
        .iter()
        .skip(10)
        .filter(|(len, _)| *len >= 1400)
        .map(|(_, n)| *n)
        .collect();
    let quiet = full.iter().filter(|&&n| n == 0).count();
    assert!(full.len() >= 40, "{} full segments", full.len());
    // A few amortised buffer growths (one allocation) are fine; bulk
    // allocation happens only where a call completes.
    assert!(
        quiet * 5 >= full.len() * 4,
        "{quiet} of {} full segments without allocating: {full:?}",
        full.len()
    );
    let bulk = full.iter().filter(|&&n| n > 1).count();
    assert!(bulk <= 2 * exchanges.len(), "{full:?}");
    // All allocations together are per call (headers, decoded messages,
    // the exchange) and per connection, not per packet.
    let total: u64 = per_packet.iter().map(|(_, n)| n).sum();
    assert!(
        total <= 100 * exchanges.len() as u64,
        "{total} allocations for {} packets, {} calls",
        packets.len(),
        exchanges.len()
    );
}
