//! HTTP/2 frame header and the payload layouts of every frame type (RFC 9113 §4, §6).

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const HEADER_LEN: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    /// Extension frames (RFC 9113 §5.5) must be ignored.
    Unknown(u8),
}

impl FrameType {
    pub fn from_u8(t: u8) -> FrameType {
        match t {
            0 => FrameType::Data,
            1 => FrameType::Headers,
            2 => FrameType::Priority,
            3 => FrameType::RstStream,
            4 => FrameType::Settings,
            5 => FrameType::PushPromise,
            6 => FrameType::Ping,
            7 => FrameType::GoAway,
            8 => FrameType::WindowUpdate,
            9 => FrameType::Continuation,
            other => FrameType::Unknown(other),
        }
    }
}

pub mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: FrameType,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: FrameType::from_u8(b[3]),
            flags: b[4],
            // The reserved high bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Pad length not smaller than the payload (RFC 9113 §6.1, §6.2).
    BadPadding,
    /// Payload shorter than the fixed fields of its type.
    TooShort,
    /// SETTINGS payload not a multiple of 6, or other size rule broken.
    BadSize,
}

/// HEADERS payload without padding and priority fields: the header block fragment.
pub fn headers_fragment<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    let body = unpad(h, payload)?;
    if h.has(flags::PRIORITY) {
        body.get(5..).ok_or(FrameError::TooShort)
    } else {
        Ok(body)
    }
}

/// PUSH_PROMISE payload: (promised stream id, header block fragment).
pub fn push_promise<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<(u32, &'a [u8]), FrameError> {
    let body = unpad(h, payload)?;
    let id = body.get(..4).ok_or(FrameError::TooShort)?;
    let promised = u32::from_be_bytes([id[0], id[1], id[2], id[3]]) & 0x7fff_ffff;
    Ok((promised, &body[4..]))
}

/// Strips the pad-length byte and trailing padding of a PADDED frame.
pub fn unpad<'a>(h: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    if !h.has(flags::PADDED) {
        return Ok(payload);
    }
    let (&pad, rest) = payload.split_first().ok_or(FrameError::TooShort)?;
    let keep = rest
        .len()
        .checked_sub(usize::from(pad))
        .ok_or(FrameError::BadPadding)?;
    Ok(&rest[..keep])
}

pub fn rst_stream_code(payload: &[u8]) -> Result<u32, FrameError> {
    let b: [u8; 4] = payload.try_into().map_err(|_| FrameError::BadSize)?;
    Ok(u32::from_be_bytes(b))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway<'a> {
    pub last_stream: u32,
    pub code: u32,
    pub debug: &'a [u8],
}

pub fn goaway(payload: &[u8]) -> Result<GoAway<'_>, FrameError> {
    if payload.len() < 8 {
        return Err(FrameError::TooShort);
    }
    Ok(GoAway {
        last_stream: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
            & 0x7fff_ffff,
        code: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
        debug: &payload[8..],
    })
}

pub mod settings {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Iterates (identifier, value) pairs of a SETTINGS payload.
pub fn settings(payload: &[u8]) -> Result<impl Iterator<Item = (u16, u32)> + '_, FrameError> {
    if payload.len() % 6 != 0 {
        return Err(FrameError::BadSize);
    }
    Ok(payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    }))
}

/// HTTP/2 error code names (RFC 9113 §7).
pub fn error_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "UNKNOWN_ERROR_CODE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u32, kind: u8, flags: u8, stream: u32) -> FrameHeader {
        let mut b = [0u8; 9];
        b[..3].copy_from_slice(&len.to_be_bytes()[1..]);
        b[3] = kind;
        b[4] = flags;
        b[5..].copy_from_slice(&stream.to_be_bytes());
        FrameHeader::parse(&b)
    }

    #[test]
    fn header_fields_and_reserved_bit() {
        let h = hdr(0x01_0203, 1, 0x25, 0x8000_0003);
        assert_eq!(h.len, 0x01_0203);
        assert_eq!(h.kind, FrameType::Headers);
        assert!(h.has(flags::END_STREAM) && h.has(flags::END_HEADERS) && h.has(flags::PRIORITY));
        assert_eq!(h.stream, 3);
        assert_eq!(hdr(0, 0xfa, 0, 0).kind, FrameType::Unknown(0xfa));
    }

    #[test]
    fn padding_and_priority() {
        let h = hdr(0, 1, flags::PADDED | flags::PRIORITY, 1);
        // pad=2, priority(5), block "ab", padding 2
        let p = [2, 0, 0, 0, 0, 16, b'a', b'b', 0, 0];
        assert_eq!(headers_fragment(&h, &p), Ok(&b"ab"[..]));
        assert_eq!(headers_fragment(&h, &[9, 1]), Err(FrameError::BadPadding));
        assert_eq!(headers_fragment(&h, &[]), Err(FrameError::TooShort));
        let h = hdr(0, 1, flags::PRIORITY, 1);
        assert_eq!(headers_fragment(&h, &[0, 0, 0]), Err(FrameError::TooShort));
        let d = hdr(0, 0, flags::PADDED, 1);
        assert_eq!(unpad(&d, &[0, b'x']), Ok(&b"x"[..]));
        assert_eq!(unpad(&d, &[1]), Err(FrameError::BadPadding));
    }

    #[test]
    fn control_frames() {
        assert_eq!(rst_stream_code(&[0, 0, 0, 8]), Ok(8));
        assert_eq!(rst_stream_code(&[0, 0, 8]), Err(FrameError::BadSize));
        let g = goaway(&[0x80, 0, 0, 5, 0, 0, 0, 2, b'h', b'i']).expect("goaway");
        assert_eq!((g.last_stream, g.code, g.debug), (5, 2, &b"hi"[..]));
        let s: Vec<_> = settings(&[0, 1, 0, 0, 0x10, 0, 0, 5, 0, 0, 0x40, 0])
            .expect("settings")
            .collect();
        assert_eq!(s, vec![(1, 4096), (5, 16384)]);
        assert!(settings(&[0; 5]).is_err());
        let pp = hdr(0, 5, 0, 1);
        assert_eq!(push_promise(&pp, &[0, 0, 0, 2, b'z']), Ok((2, &b"z"[..])));
        assert_eq!(error_name(8), "CANCEL");
    }
}
