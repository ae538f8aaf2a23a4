//! HPACK: header blocks decoded in sequence by one decoder (full knowledge or
//! started mid-connection), interleaved with SETTINGS_HEADER_TABLE_SIZE
//! changes and state loss; plus raw Huffman decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfwire::http2::hpack::{Decoder, Limits};
use tfwire::http2::huffman;
use tfwire_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let limits = if mode & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_string_len: 64,
            max_header_list_size: 512,
            max_fields: 8,
            max_tracked_table_size: 256,
        }
    };
    let mut d = if mode & 1 == 0 {
        Decoder::new()
    } else {
        Decoder::new_mid_connection()
    }
    .with_limits(limits);
    while !inp.is_empty() {
        let op = inp.u8();
        match op & 3 {
            0 | 1 => {
                let len = if op & 1 == 0 {
                    usize::from(inp.u16())
                } else {
                    usize::MAX
                };
                let block = inp.bytes(len);
                if let Ok(fields) = d.decode(block) {
                    assert!(fields.len() <= limits.max_fields);
                    let list: usize = fields
                        .iter()
                        .map(|f| {
                            f.name.as_ref().map_or(0, Vec::len)
                                + f.value.as_ref().map_or(0, Vec::len)
                                + 32
                        })
                        .sum();
                    assert!(list <= limits.max_header_list_size);
                }
            }
            2 => {
                let n = if op & 4 == 0 {
                    usize::from(inp.u16())
                } else {
                    inp.u32() as usize
                };
                if op & 8 == 0 {
                    d.set_max_table_size_limit(n);
                } else {
                    d.mark_state_lost();
                }
            }
            _ => {
                let len = usize::from(inp.u16());
                let mut out = Vec::new();
                let _ = huffman::decode(inp.bytes(len), &mut out);
                assert!(out.len() <= len * 8 / 5 + 1);
            }
        }
        assert!(d.dynamic_table_size() <= limits.max_tracked_table_size);
        assert!(d.dynamic_table_size() <= d.max_table_size());
        assert!(d.known_entries() * 32 <= d.dynamic_table_size());
    }
});
