//! The whole pipeline on a synthetic capture: the fuzz input describes TCP
//! conversations (bytes per direction, loss, duplication, reordering, FIN,
//! RST, new connections, clock steps back), which are written as a pcap file
//! and analysed like `tfwire analyze` does (Analyzer → Engine → report).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::pipeline::Config;
use tfwire_fuzz::{analyze, conversation_pcap, tight_config};

fuzz_target!(|data: &[u8]| {
    let Some(&mode) = data.first() else {
        return;
    };
    let pcap = conversation_pcap(data);
    let config = if mode & 4 == 0 {
        Config::default()
    } else {
        tight_config()
    };
    let packets = analyze(&pcap, config, mode & 8 != 0);
    assert!(packets.is_some(), "a written pcap must open");
});
