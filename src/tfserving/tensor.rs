//! Summaries of `tensorflow.TensorProto` read in place from the wire bytes:
//! dtype, shape, how many values came and in which encoding. Payloads are
//! measured, never copied, and checked the way `Tensor::FromProto` checks
//! them, so a malformed tensor is named before the server names it.

use serde::Serialize;

use super::dtype;
use crate::grpc::message::{elision_at, removed_within, Elision, Leaf, Pruning};

/// Predict messages as kept by the gRPC layer: the payloads of the value
/// fields of every TensorProto in the tensor map are measured, not kept.
pub const PREDICT_REQUEST: Pruning = Pruning {
    // PredictRequest.inputs, PredictRequest.model_spec
    map: 2,
    spec: 1,
    leaf: tensor_leaf,
    min_len: PRUNE_FROM,
};

pub const PREDICT_RESPONSE: Pruning = Pruning {
    // PredictResponse.outputs, PredictResponse.model_spec
    map: 1,
    spec: 2,
    leaf: tensor_leaf,
    min_len: PRUNE_FROM,
};

/// Predict messages from this size on (on the wire) are pruned: the large
/// tensors whose copies cost page faults and memory bandwidth. Smaller ones
/// are cheaper to copy than to walk.
const PRUNE_FROM: u32 = 64 << 10;

/// TensorProto fields whose payloads [`summarize`] only measures.
fn tensor_leaf(num: u32) -> Option<Leaf> {
    match num {
        4 => Some(Leaf::StringContent),
        _ => match typed_field(num)?.1 {
            Packing::Varint => Some(Leaf::Varints),
            Packing::Fixed32 | Packing::Fixed64 | Packing::PerItem | Packing::PerByte => {
                Some(Leaf::Opaque)
            }
        },
    }
}

/// A kept message and the payloads left out of it, for reading the
/// TensorProtos it holds as if they were whole.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kept<'a> {
    pub message: &'a [u8],
    pub elided: &'a [Elision],
}

impl<'a> Kept<'a> {
    pub fn new(message: &'a [u8], elided: &'a [Elision]) -> Self {
        Kept { message, elided }
    }

    fn hole(&self, payload: &[u8]) -> Option<&'a Elision> {
        if self.elided.is_empty() {
            return None;
        }
        elision_at(self.message, self.elided, payload)
    }
}

/// How a tensor's values were encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueEncoding {
    /// Raw row-major bytes in `tensor_content`.
    TensorContent,
    /// Repeated typed fields (`float_val`, `int64_val`, …).
    Typed,
    /// No values at all (the server fills zeros).
    Empty,
    /// REST: values written as JSON.
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorSummary {
    /// The alias; empty (null in JSON) for a REST input whose alias comes
    /// from a signature that is not known.
    #[serde(serialize_with = "empty_as_null")]
    pub name: String,
    /// TF enum name (`DT_FLOAT`); null when the number is not a known dtype.
    pub dtype: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype_code: Option<i32>,
    /// Dimensions as sent (`-1` for unknown); null for unknown rank or no shape field.
    pub shape: Option<Vec<i64>>,
    /// Number of values present on the wire.
    pub values: Option<u64>,
    pub encoding: ValueEncoding,
    /// Typed field(s) the values came in, e.g. `float_val`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
    /// Bytes of the serialized TensorProto.
    pub bytes: u64,
    /// Reasons the server would reject this tensor (`tensor parsing error`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// REST: the JSON types of the values (`float`, `int`, `string`, `b64`, `bool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json: Option<Vec<&'static str>>,
}

fn empty_as_null<S: serde::Serializer>(name: &str, s: S) -> Result<S::Ok, S::Error> {
    if name.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(name)
    }
}

impl TensorSummary {
    /// Elements the shape holds, if the shape is known and valid.
    pub fn elements(&self) -> Option<u64> {
        element_count(self.shape.as_deref()?)
    }
}

/// Product of the dims, or None if any is negative or it overflows int64.
pub fn element_count(dims: &[i64]) -> Option<u64> {
    let mut n: i64 = 1;
    for &d in dims {
        if d < 0 {
            return None;
        }
        n = n.checked_mul(d)?;
    }
    Some(n as u64)
}

/// Protobuf wire reader over a byte slice. Every read is bounds-checked.
pub(crate) struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The buffer is a prefix of the message: a field running past its end
    /// is reported as `Truncated` instead of an error.
    partial: bool,
    /// Refuse what prost refuses and this reader would otherwise let pass:
    /// a tenth varint byte above 1, a key beyond 32 bits.
    strict: bool,
}

pub(crate) enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32,
    /// Partial mode: a length-delimited field cut by the end of the buffer.
    Truncated {
        declared: u64,
        available: &'a [u8],
    },
}

impl<'a> Wire<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Wire {
            buf,
            pos: 0,
            partial: false,
            strict: false,
        }
    }

    pub(crate) fn new_strict(buf: &'a [u8]) -> Self {
        Wire {
            buf,
            pos: 0,
            partial: false,
            strict: true,
        }
    }

    pub(crate) fn new_partial(buf: &'a [u8]) -> Self {
        Wire {
            buf,
            pos: 0,
            partial: true,
            strict: false,
        }
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Option<u64> {
        // Keys, dtypes, dimensions and short lengths: one byte.
        let b = *self.buf.get(self.pos)?;
        if b < 0x80 {
            self.pos += 1;
            return Some(u64::from(b));
        }
        self.varint_long()
    }

    fn varint_long(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (!self.strict || i < 9 || b < 2).then_some(v);
            }
        }
        None
    }

    /// Next (field number, value); None at the end, Err on malformed bytes.
    /// Always inlined: called for every field of every message, its call
    /// frame was 7% of the small-request profile's instructions.
    #[inline(always)]
    pub(crate) fn next(&mut self) -> Option<Result<(u32, Field<'a>), ()>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let Some(key) = self
            .varint()
            .filter(|&k| !self.strict || k <= u64::from(u32::MAX))
        else {
            return Some(Err(()));
        };
        let num = (key >> 3) as u32;
        let field = match key & 7 {
            0 => match self.varint() {
                Some(v) => Field::Varint(v),
                None => return Some(Err(())),
            },
            1 => {
                if self.buf.len() - self.pos < 8 {
                    return Some(Err(()));
                }
                self.pos += 8;
                Field::Fixed64
            }
            2 => {
                let Some(len) = self.varint() else {
                    return Some(Err(()));
                };
                let Some(end) = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.pos.checked_add(l))
                    .filter(|&e| e <= self.buf.len())
                else {
                    if self.partial {
                        let available = &self.buf[self.pos..];
                        self.pos = self.buf.len();
                        return Some(Ok((
                            (key >> 3) as u32,
                            Field::Truncated {
                                declared: len,
                                available,
                            },
                        )));
                    }
                    return Some(Err(()));
                };
                let b = &self.buf[self.pos..end];
                self.pos = end;
                Field::Bytes(b)
            }
            5 => {
                if self.buf.len() - self.pos < 4 {
                    return Some(Err(()));
                }
                self.pos += 4;
                Field::Fixed32
            }
            _ => return Some(Err(())),
        };
        if num == 0 {
            return Some(Err(()));
        }
        Some(Ok((num, field)))
    }
}

/// Layout of a typed value field of TensorProto.
#[derive(Clone, Copy)]
enum Packing {
    Fixed32,
    Fixed64,
    Varint,
    /// One value per occurrence (strings, messages).
    PerItem,
    /// One value per byte (float8_val).
    PerByte,
}

fn typed_field(num: u32) -> Option<(&'static str, Packing)> {
    Some(match num {
        5 => ("float_val", Packing::Fixed32),
        6 => ("double_val", Packing::Fixed64),
        7 => ("int_val", Packing::Varint),
        8 => ("string_val", Packing::PerItem),
        9 => ("scomplex_val", Packing::Fixed32),
        10 => ("int64_val", Packing::Varint),
        11 => ("bool_val", Packing::Varint),
        12 => ("dcomplex_val", Packing::Fixed64),
        13 => ("half_val", Packing::Varint),
        14 => ("resource_handle_val", Packing::PerItem),
        15 => ("variant_val", Packing::PerItem),
        16 => ("uint32_val", Packing::Varint),
        17 => ("uint64_val", Packing::Varint),
        18 => ("float8_val", Packing::PerByte),
        _ => return None,
    })
}

/// Summarises one serialized TensorProto.
pub fn summarize(name: &str, bytes: &[u8]) -> TensorSummary {
    summarize_impl(name, bytes, false, Kept::default())
}

/// Summarises the first bytes of a TensorProto whose end was never sent
/// (a stream reset mid-message): lengths come from the field prefixes.
pub fn summarize_prefix(name: &str, bytes: &[u8]) -> TensorSummary {
    summarize_impl(name, bytes, true, Kept::default())
}

/// [`summarize`] or [`summarize_prefix`] of a TensorProto inside a kept
/// message whose payloads may have been left out.
pub fn summarize_kept(name: &str, bytes: &[u8], partial: bool, kept: Kept<'_>) -> TensorSummary {
    summarize_impl(name, bytes, partial, kept)
}

fn summarize_impl(name: &str, bytes: &[u8], partial: bool, kept: Kept<'_>) -> TensorSummary {
    let mut dtype_code: i32 = 0;
    let mut shape: Option<Vec<i64>> = None;
    let mut unknown_rank = false;
    let mut content_len: Option<usize> = None;
    let mut content: &[u8] = &[];
    // Left-out content: what the string check found over it.
    let mut content_strings: Option<Option<u64>> = None;
    let mut typed: u64 = 0;
    let mut fields: Vec<&'static str> = Vec::new();
    let mut problems = Vec::new();
    let mut malformed = false;

    let mut truncated = false;
    let mut w = if partial {
        Wire::new_partial(bytes)
    } else {
        Wire::new(bytes)
    };
    while let Some(item) = w.next() {
        let Ok((num, field)) = item else {
            malformed = !partial;
            break;
        };
        match (num, field) {
            (1, Field::Varint(v)) => dtype_code = v as i32,
            (2, Field::Bytes(b)) => match parse_shape(b) {
                Some((dims, unk)) => {
                    // Repeated occurrences of a message field merge (dims
                    // append), up to the same cap as one shape.
                    match &mut shape {
                        // parse_shape keeps at most MAX_DIMS_KEPT already.
                        None => shape = Some(dims),
                        Some(kept) => {
                            let room = MAX_DIMS_KEPT.saturating_sub(kept.len());
                            kept.extend(dims.into_iter().take(room));
                        }
                    }
                    unknown_rank |= unk;
                }
                None => malformed = true,
            },
            (4, Field::Bytes(b)) => {
                // A repeated `bytes` scalar: the last occurrence wins.
                let hole = kept.hole(b);
                content_len = Some(b.len() + hole.map_or(0, |e| e.removed as usize));
                content = b;
                content_strings = hole.map(|e| e.strings);
            }
            (
                4,
                Field::Truncated {
                    declared,
                    available,
                },
            ) => {
                let removed = kept.hole(available).map_or(0, |e| e.removed);
                content_len = usize::try_from(declared.saturating_add(removed)).ok();
                content = available;
                content_strings = None;
                truncated = true;
            }
            (_, Field::Truncated { .. }) => truncated = true,
            (num, field) => {
                if let Some((fname, packing)) = typed_field(num) {
                    let hole = match field {
                        Field::Bytes(b) => kept.hole(b),
                        _ => None,
                    };
                    let len = |b: &[u8]| b.len() as u64 + hole.map_or(0, |e| e.removed);
                    let n = match (packing, field) {
                        (Packing::Fixed32, Field::Bytes(b)) => len(b) / 4,
                        (Packing::Fixed64, Field::Bytes(b)) => len(b) / 8,
                        (Packing::Varint, Field::Bytes(b)) => {
                            b.iter().filter(|&&x| x & 0x80 == 0).count() as u64
                                + hole.map_or(0, |e| e.varint_ends)
                        }
                        (Packing::PerByte, Field::Bytes(b)) => len(b),
                        (Packing::PerItem, Field::Bytes(_)) => 1,
                        (Packing::Fixed32, Field::Fixed32)
                        | (Packing::Fixed64, Field::Fixed64)
                        | (Packing::Varint, Field::Varint(_)) => 1,
                        _ => {
                            malformed = true;
                            0
                        }
                    };
                    // Complex values come as (re, im) pairs.
                    let n = if num == 9 || num == 12 { n / 2 } else { n };
                    typed += n;
                    if fields.is_empty() {
                        // Usually the only one: no room for four.
                        fields = vec![fname];
                    } else if !fields.contains(&fname) {
                        fields.push(fname);
                    }
                }
            }
        }
    }
    if malformed {
        problems.push("the TensorProto bytes are not valid protobuf".to_string());
    }

    let dt = dtype::name(dtype_code);
    if dtype_code == 0 {
        problems.push("dtype is DT_INVALID (not set)".to_string());
    } else if dt.is_none() {
        problems.push(format!("unknown dtype enum ({dtype_code})"));
    }
    let shape_out = if unknown_rank { None } else { shape };
    if let Some(dims) = &shape_out {
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            problems.push(format!(
                "shape {} has a negative dimension ({d}); a request tensor must have every dimension known",
                dtype::shape_string(dims)
            ));
        } else if dims.len() > 254 {
            problems.push(format!(
                "shape has {} dimensions (more than 254)",
                dims.len()
            ));
        } else if element_count(dims).is_none() {
            problems.push("shape's element count overflows int64".to_string());
        }
    }
    let elements = shape_out.as_deref().and_then(element_count);

    let (encoding, values) = match content_len {
        Some(len) if len > 0 => {
            let values = if dtype_code == dtype::DT_STRING && truncated {
                elements
            } else if dtype_code == dtype::DT_STRING {
                let ok = |n: u64| match content_strings {
                    Some(matched) => Some(matched == Some(n)),
                    None => string_content_ok(content, n),
                };
                match (elements, elements.and_then(ok)) {
                    (Some(n), Some(true)) => Some(n),
                    (Some(_), _) => {
                        problems.push(
                            "DT_STRING tensor_content is malformed (lengths do not match the data)"
                                .to_string(),
                        );
                        None
                    }
                    (None, _) => None,
                }
            } else if let Some(size) = dtype::size_of(dtype_code) {
                let n = (len / size) as u64;
                if len % size != 0 {
                    problems.push(format!(
                        "tensor_content has {len} bytes, not a multiple of the {size}-byte {} element",
                        dt.unwrap_or("dtype")
                    ));
                } else if let Some(e) = elements {
                    if n != e {
                        problems.push(format!(
                            "tensor_content holds {n} values ({len} bytes) but shape {} needs {e}",
                            dtype::shape_string(shape_out.as_deref().unwrap_or(&[]))
                        ));
                    }
                }
                Some(n)
            } else {
                None
            };
            (ValueEncoding::TensorContent, values)
        }
        // A cut typed field holds more values than were seen.
        _ if typed > 0 || !fields.is_empty() => {
            (ValueEncoding::Typed, (!truncated).then_some(typed))
        }
        _ => (ValueEncoding::Empty, Some(0)),
    };

    TensorSummary {
        name: name.to_string(),
        dtype: dt,
        dtype_code: if dt.is_none() { Some(dtype_code) } else { None },
        shape: shape_out,
        values,
        encoding,
        fields,
        bytes: bytes.len() as u64 + removed_within(kept.message, kept.elided, bytes),
        problems,
        json: None,
    }
}

/// Hostile shapes may claim millions of dims: TF rejects more than 254, a
/// little more than that is kept to report it.
const MAX_DIMS_KEPT: usize = 1024;

/// TensorShapeProto: (dims, unknown_rank). Field 1 is unused by TF.
fn parse_shape(b: &[u8]) -> Option<(Vec<i64>, bool)> {
    // A dim takes at least two bytes: room for all at once.
    let mut dims = Vec::with_capacity((b.len() / 2).min(MAX_DIMS_KEPT));
    let mut unknown = false;
    let mut w = Wire::new(b);
    while let Some(item) = w.next() {
        match item.ok()? {
            (2, Field::Bytes(dim)) => {
                let mut size = 0i64;
                let mut dw = Wire::new(dim);
                while let Some(d) = dw.next() {
                    if let (1, Field::Varint(v)) = d.ok()? {
                        size = v as i64;
                    }
                }
                if dims.len() < MAX_DIMS_KEPT {
                    dims.push(size);
                }
            }
            (3, Field::Varint(v)) => unknown = v != 0,
            _ => {}
        }
    }
    Some((dims, unknown))
}

/// DT_STRING tensor_content: `n` varint32 lengths, then the bytes; the
/// lengths must add up to exactly the remaining size (tensor_coding.cc).
fn string_content_ok(content: &[u8], n: u64) -> Option<bool> {
    let mut w = Wire::new(content);
    let mut total: u64 = 0;
    for _ in 0..n {
        let l = w.varint()?;
        if l > u64::from(u32::MAX) {
            return Some(false);
        }
        total = total.checked_add(l)?;
    }
    Some(total == (content.len() - w.pos) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(num: u32, wt: u8) -> Vec<u8> {
        varint(u64::from(num) << 3 | u64::from(wt))
    }
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
    fn ld(num: u32, body: &[u8]) -> Vec<u8> {
        let mut v = key(num, 2);
        v.extend(varint(body.len() as u64));
        v.extend_from_slice(body);
        v
    }
    fn shape(dims: &[i64]) -> Vec<u8> {
        let mut s = Vec::new();
        for &d in dims {
            let mut dim = key(1, 0);
            dim.extend(varint(d as u64));
            s.extend(ld(2, &dim));
        }
        ld(2, &s)
    }
    fn tensor(dtype: u64, dims: &[i64], rest: &[u8]) -> Vec<u8> {
        let mut t = key(1, 0);
        t.extend(varint(dtype));
        t.extend(shape(dims));
        t.extend_from_slice(rest);
        t
    }

    #[test]
    fn tensor_content_float64() {
        let t = tensor(2, &[1, 10], &ld(4, &[0u8; 80]));
        let s = summarize("features", &t);
        assert_eq!(s.dtype, Some("DT_DOUBLE"));
        assert_eq!(s.shape, Some(vec![1, 10]));
        assert_eq!(s.values, Some(10));
        assert_eq!(s.encoding, ValueEncoding::TensorContent);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }

    #[test]
    fn packed_and_unpacked_typed_fields() {
        let mut body = ld(5, &[0u8; 12]); // 3 packed floats
        body.extend(key(5, 5));
        body.extend([0, 0, 0, 0]); // one unpacked float
        let s = summarize("x", &tensor(1, &[2, 2], &body));
        assert_eq!(s.values, Some(4));
        assert_eq!(s.encoding, ValueEncoding::Typed);
        assert_eq!(s.fields, vec!["float_val"]);

        let mut ints = Vec::new();
        for v in [1u64, 300, 70000] {
            ints.extend(varint(v));
        }
        let s = summarize("ids", &tensor(9, &[3], &ld(10, &ints)));
        assert_eq!((s.dtype, s.values), (Some("DT_INT64"), Some(3)));

        let mut strs = ld(8, b"abc");
        strs.extend(ld(8, b""));
        let s = summarize("s", &tensor(7, &[2], &strs));
        assert_eq!(s.values, Some(2));
    }

    #[test]
    fn malformed_tensors_are_named() {
        let s = summarize("x", &tensor(1, &[1, 10], &ld(4, &[0u8; 36])));
        assert_eq!(s.values, Some(9));
        assert!(s.problems[0].contains("needs 10"), "{:?}", s.problems);

        let s = summarize("x", &tensor(1, &[-1, 10], &ld(5, &[0u8; 40])));
        assert!(s.problems[0].contains("negative"));

        let s = summarize("x", &tensor(1, &[3], &ld(4, &[0u8; 7])));
        assert!(s.problems[0].contains("not a multiple"));

        let s = summarize("x", &[0xff, 0xff]);
        assert!(!s.problems.is_empty());
        assert_eq!(s.dtype, Some("DT_INVALID"));
    }

    #[test]
    fn string_tensor_content_layout() {
        let mut c = vec![3u8, 2];
        c.extend_from_slice(b"abcde");
        let s = summarize("s", &tensor(7, &[2], &ld(4, &c)));
        assert_eq!(s.values, Some(2));
        assert!(s.problems.is_empty());
        let s = summarize("s", &tensor(7, &[2], &ld(4, &[3u8, 2, b'a'])));
        assert!(!s.problems.is_empty());
    }

    #[test]
    fn empty_tensor_and_unknown_rank() {
        let s = summarize("e", &tensor(1, &[0, 3], &[]));
        assert_eq!(s.encoding, ValueEncoding::Empty);
        assert_eq!(s.values, Some(0));
        let mut t = key(1, 0);
        t.extend(varint(1));
        let mut sh = key(3, 0);
        sh.extend(varint(1));
        t.extend(ld(2, &sh));
        assert_eq!(summarize("u", &t).shape, None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let buf: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = summarize("r", &buf);
        }
    }

    /// Found in review (the `protobuf` fuzz target checks it): the 1024-dim cap held
    /// for one `tensor_shape`, but repeated `tensor_shape` fields (which
    /// protobuf merges) appended without limit.
    #[test]
    fn repeated_shapes_keep_at_most_1024_dims() {
        let mut t = key(1, 0);
        t.extend(varint(1));
        for _ in 0..3 {
            t.extend(shape(&[1; 1000]));
        }
        let s = summarize("x", &t);
        assert_eq!(s.shape.as_ref().map(Vec::len), Some(1024));
        assert!(s.problems.iter().any(|p| p.contains("more than 254")));
    }
}
