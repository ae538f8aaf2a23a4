//! HPACK Huffman string decoding (RFC 7541 §5.2, Appendix B).
//!
//! Decoding consumes one input byte per table lookup. The states are the internal nodes of
//! the Huffman tree: the code has 257 symbols and is complete, so the tree has exactly 256
//! internal nodes and a state fits in a `u8`. For each (state, byte) pair a 64 Ki-entry
//! table gives the next state and the 0, 1 or 2 bytes decoded on the way (the shortest
//! code is 5 bits, so 8 bits complete at most two codes). The table is derived at compile
//! time, via a 4-bit machine, from the Appendix B code list: no runtime initialisation,
//! and a mistyped code list (not prefix-free or not complete) fails the build.

/// Why a Huffman-encoded string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The string ends in the middle of a code whose bits are not a prefix of EOS
    /// (RFC 7541 §5.2: padding must be the most significant bits of EOS, i.e. all ones).
    InvalidPadding,
    /// The trailing all-ones padding is longer than 7 bits (RFC 7541 §5.2).
    PaddingTooLong,
    /// The string contains the complete EOS code (RFC 7541 §5.2: MUST be an error).
    EosInString,
}

impl std::fmt::Display for HuffmanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HuffmanError::InvalidPadding => "huffman padding is not a prefix of EOS",
            HuffmanError::PaddingTooLong => "huffman padding longer than 7 bits",
            HuffmanError::EosInString => "huffman string contains EOS",
        })
    }
}

impl std::error::Error for HuffmanError {}

/// Decodes an HPACK Huffman string (RFC 7541 §5.2, Appendix B), appending to `out`.
///
/// At most `input.len() * 8 / 5` bytes are appended (5 bits is the shortest code); `out`
/// temporarily grows by that much. On error `out` is left as it was.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let start = out.len();
    // Write both candidate bytes of every step into zeroed room and advance by the
    // decoded count: branching on the count would mispredict constantly. Before input
    // byte k at most 8k/5 bytes were written, so `w + 1` stays below the length.
    out.resize(start + input.len() * 8 / 5 + 2, 0);
    let buf = &mut out[start..];
    let mut w = 0usize;
    let mut state = 0u32;
    for &byte in input {
        let step = BYTE_STEPS[usize::from(((state << 8) | u32::from(byte)) as u16)];
        if step & STEP_EOS != 0 {
            out.truncate(start);
            return Err(HuffmanError::EosInString);
        }
        buf[w] = (step >> 8) as u8;
        buf[w + 1] = (step >> 16) as u8;
        w += (step >> 24) as usize & 3;
        state = step & 0xff;
    }
    out.truncate(start + w);
    let end = match END[usize::from(state as u8)] {
        END_OK => return Ok(()),
        END_TOO_LONG => HuffmanError::PaddingTooLong,
        _ => HuffmanError::InvalidPadding,
    };
    out.truncate(start);
    Err(end)
}

/// Byte step, packed: bits 0-7 next state, 8-15 and 16-23 decoded bytes, 24-25 how many
/// of them are valid, bit 31 EOS was completed.
static BYTE_STEPS: [u32; 65536] = build_byte_steps();
const STEP_EOS: u32 = 1 << 31;

/// What ending the string in a given state means (RFC 7541 §5.2).
static END: [u8; 256] = build_machine().end;
const END_OK: u8 = 0;
const END_TOO_LONG: u8 = 1;
const END_INVALID: u8 = 2;

/// One transition of the 4-bit machine the byte table is built from.
#[derive(Clone, Copy)]
struct Step {
    next: u8,
    sym: u8,
    flags: u8,
}

/// `Step::sym` holds a decoded byte.
const EMIT: u8 = 1;
/// The nibble completed the EOS code.
const FAIL: u8 = 2;

struct Machine {
    steps: [[Step; 16]; 256],
    end: [u8; 256],
}

/// Tree child marker: the low 9 bits are a symbol, not a node id. Node id 0 is the root,
/// which is never a child, so 0 means "not yet filled".
const LEAF: u16 = 0x8000;
const EOS: u16 = 256;

const fn build_machine() -> Machine {
    // Binary tree of internal nodes; children are node ids or LEAF|symbol.
    let mut tree = [[0u16; 2]; 256];
    let mut used = 1usize;
    let mut sym = 0usize;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0usize;
        let mut depth = 0u8;
        while depth < len {
            let bit = ((code >> (len - 1 - depth)) & 1) as usize;
            let child = tree[node][bit];
            if depth + 1 == len {
                assert!(child == 0, "huffman code is not prefix-free");
                tree[node][bit] = LEAF | sym as u16;
            } else if child == 0 {
                assert!(used < 256, "huffman tree has too many nodes");
                tree[node][bit] = used as u16;
                node = used;
                used += 1;
            } else {
                assert!(child & LEAF == 0, "huffman code is not prefix-free");
                node = child as usize;
            }
            depth += 1;
        }
        sym += 1;
    }
    assert!(used == 256, "huffman code is not complete");

    // Ending inside a node reached by k one-bits from the root is k bits of padding;
    // ending anywhere else is not a prefix of EOS.
    let mut end = [END_INVALID; 256];
    end[0] = END_OK;
    let mut node = 0usize;
    let mut depth = 0;
    loop {
        let child = tree[node][1];
        if child & LEAF != 0 {
            break;
        }
        node = child as usize;
        depth += 1;
        end[node] = if depth <= 7 { END_OK } else { END_TOO_LONG };
    }

    let empty = Step {
        next: 0,
        sym: 0,
        flags: 0,
    };
    let mut steps = [[empty; 16]; 256];
    let mut state = 0usize;
    while state < 256 {
        let mut nibble = 0usize;
        while nibble < 16 {
            let mut node = state;
            let mut step = empty;
            let mut i = 0;
            while i < 4 {
                let bit = (nibble >> (3 - i)) & 1;
                let child = tree[node][bit];
                assert!(child != 0, "huffman code is not complete");
                if child & LEAF != 0 {
                    let s = child & !LEAF;
                    if s == EOS {
                        step.flags = FAIL;
                        node = 0;
                        break;
                    }
                    assert!(step.flags == 0, "two codes completed in one nibble");
                    step.flags = EMIT;
                    step.sym = s as u8;
                    node = 0;
                } else {
                    node = child as usize;
                }
                i += 1;
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    Machine { steps, end }
}

/// Composes two nibble steps into one byte step.
const fn build_byte_steps() -> [u32; 65536] {
    let steps = build_machine().steps;
    let mut table = [0u32; 65536];
    let mut i = 0usize;
    while i < table.len() {
        let (state, byte) = (i >> 8, i & 0xff);
        let hi = steps[state][byte >> 4];
        let lo = steps[hi.next as usize][byte & 0x0f];
        table[i] = if (hi.flags | lo.flags) & FAIL != 0 {
            STEP_EOS
        } else {
            let mut count = 0u32;
            let mut syms = 0u32;
            if hi.flags & EMIT != 0 {
                syms = hi.sym as u32;
                count = 1;
            }
            if lo.flags & EMIT != 0 {
                syms |= (lo.sym as u32) << (8 * count);
                count += 1;
            }
            lo.next as u32 | (syms << 8) | (count << 24)
        };
        i += 1;
    }
    table
}

/// RFC 7541 Appendix B: (code aligned to the LSB, bit length) for symbols 0..=255 and EOS.
const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

#[cfg(test)]
/// Reference encoder for tests only (RFC 7541 §5.2): pads with the high bits of EOS.
pub(crate) fn encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in input {
        let (code, len) = CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(input, &mut out).map(|()| out)
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn codes_are_canonical() {
        // Appendix B is a canonical Huffman code: ordering symbols by (length, symbol) and
        // counting up reproduces every code. This cross-checks the hand-typed table.
        let mut order: Vec<usize> = (0..CODES.len()).collect();
        order.sort_by_key(|&s| (CODES[s].1, s));
        let mut code: u32 = 0;
        let mut prev_len = CODES[order[0]].1;
        for (i, &s) in order.iter().enumerate() {
            let len = CODES[s].1;
            if i > 0 {
                code = (code + 1) << (len - prev_len);
            }
            prev_len = len;
            assert_eq!(CODES[s].0, code, "symbol {s}");
        }
        assert_eq!(CODES[256], (0x3fff_ffff, 30));
    }

    #[test]
    fn rfc_appendix_c_strings() {
        let cases: [(&str, &str); 11] = [
            ("f1e3c2e5f23a6ba0ab90f4ff", "www.example.com"),
            ("a8eb10649cbf", "no-cache"),
            ("25a849e95ba97d7f", "custom-key"),
            ("25a849e95bb8e8b4bf", "custom-value"),
            ("6402", "302"),
            ("aec3771a4b", "private"),
            (
                "d07abe941054d444a8200595040b8166e082a62d1bff",
                "Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            (
                "9d29ad171863c78f0b97c8e9ae82ae43d3",
                "https://www.example.com",
            ),
            ("640eff", "307"),
            ("9bd9ab", "gzip"),
            (
                "94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for (h, s) in cases {
            assert_eq!(dec(&hex(h)).expect("decode"), s.as_bytes(), "{s}");
            assert_eq!(encode(s.as_bytes()), hex(h), "{s}");
        }
    }

    #[test]
    fn every_symbol_round_trips() {
        for b in 0..=255u8 {
            for n in 1..=3 {
                let s = vec![b; n];
                assert_eq!(dec(&encode(&s)).expect("decode"), s, "byte {b} x{n}");
            }
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(dec(&encode(&all)).expect("decode"), all);
        assert_eq!(dec(&[]).expect("decode"), b"");
    }

    #[test]
    fn padding_rules() {
        // 'a' is 00011; padding 111 is fine.
        assert_eq!(dec(&[0x1f]).expect("decode"), b"a");
        // Padding with a zero bit is not a prefix of EOS.
        assert_eq!(dec(&[0x1e]), Err(HuffmanError::InvalidPadding));
        assert_eq!(dec(&[0x18]), Err(HuffmanError::InvalidPadding));
        // 'a' + 11 one-bits: longer than 7 bits of padding.
        assert_eq!(dec(&[0x1f, 0xff]), Err(HuffmanError::PaddingTooLong));
        // A whole byte of ones is 8 bits of padding.
        assert_eq!(dec(&[0xff]), Err(HuffmanError::PaddingTooLong));
        // Each length leaves a different number of padding bits (0..=7); all must decode.
        for len in 0..40 {
            let s = vec![b'e'; len];
            assert_eq!(dec(&encode(&s)).expect("decode"), s);
        }
    }

    #[test]
    fn eos_rejected() {
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xfc]),
            Err(HuffmanError::EosInString)
        );
        assert_eq!(
            dec(&[0xff, 0xff, 0xff, 0xff]),
            Err(HuffmanError::EosInString)
        );
        // 'a' followed by EOS.
        assert_eq!(
            dec(&[0x1f, 0xff, 0xff, 0xff, 0xf0]),
            Err(HuffmanError::EosInString)
        );
    }

    /// Bit-at-a-time decoder straight from the code list, to check the tables against.
    fn reference_decode(input: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let codes: std::collections::HashMap<(u32, u8), usize> =
            CODES.iter().enumerate().map(|(s, &c)| (c, s)).collect();
        let mut out = Vec::new();
        let (mut code, mut len) = (0u32, 0u8);
        for byte in input {
            for i in (0..8).rev() {
                code = (code << 1) | u32::from((byte >> i) & 1);
                len += 1;
                if let Some(&sym) = codes.get(&(code, len)) {
                    if sym == 256 {
                        return Err(HuffmanError::EosInString);
                    }
                    out.push(sym as u8);
                    (code, len) = (0, 0);
                }
            }
        }
        if code != (1 << len) - 1 {
            Err(HuffmanError::InvalidPadding)
        } else if len > 7 {
            Err(HuffmanError::PaddingTooLong)
        } else {
            Ok(out)
        }
    }

    #[test]
    fn random_input_matches_reference() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut out = vec![b'#'];
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    // Bias towards 0xff so long codes, padding and EOS get exercised.
                    let b = (x >> ((i % 8) * 8)) as u8;
                    if x & (1 << (i % 64)) != 0 {
                        0xff
                    } else {
                        b
                    }
                })
                .collect();
            out.truncate(1);
            let got = decode(&bytes, &mut out).map(|()| out[1..].to_vec());
            assert_eq!(got, reference_decode(&bytes), "{bytes:02x?}");
            if got.is_err() {
                assert_eq!(out, b"#", "output untouched on error");
            }
        }
    }
}
