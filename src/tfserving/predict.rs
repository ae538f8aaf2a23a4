//! Predict requests and responses read in place: the model_spec's texts and
//! each tensor's alias and bytes are borrowed from the message, with no map,
//! no owned keys and no intermediate structs. Predict is nearly every call on
//! a busy server, so this is the hot path of decoding.
//!
//! Only the plain, well-formed shape of the message is read here; anything
//! else (an unknown field, a repeated singular field, a duplicate alias, a
//! wire type or varint prost would refuse, invalid UTF-8) returns None and
//! the caller decodes with prost, whose result and error text are the
//! reference. So this reader never decides what a message means on its own.

use super::tensor::{Field, Wire};
use super::tfs;

/// A ModelSpec, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spec<'a> {
    pub name: &'a str,
    pub version: Option<i64>,
    pub version_label: Option<&'a str>,
    pub signature_name: &'a str,
}

impl<'a> From<&'a tfs::ModelSpec> for Spec<'a> {
    fn from(s: &'a tfs::ModelSpec) -> Self {
        use tfs::model_spec::VersionChoice;
        Spec {
            name: &s.name,
            version: match s.version_choice {
                Some(VersionChoice::Version(v)) => Some(v),
                _ => None,
            },
            version_label: match &s.version_choice {
                Some(VersionChoice::VersionLabel(l)) => Some(l),
                _ => None,
            },
            signature_name: &s.signature_name,
        }
    }
}

/// A PredictRequest or PredictResponse, borrowed.
#[derive(Debug, Default)]
pub(super) struct Predict<'a> {
    pub spec: Option<Spec<'a>>,
    /// (alias, serialized TensorProto) in wire order; aliases are distinct.
    pub tensors: Vec<(&'a str, &'a [u8])>,
    pub output_filter: Vec<&'a str>,
}

/// Field numbers: the request and the response put model_spec and the
/// tensor map at different numbers.
struct Layout {
    spec: u32,
    tensors: u32,
    output_filter: Option<u32>,
}

/// Beyond this many tensors the duplicate check (linear) is left to prost.
const MAX_TENSORS: usize = 64;

/// PredictRequest: model_spec = 1, inputs = 2, output_filter = 3.
pub(super) fn request(message: &[u8]) -> Option<Predict<'_>> {
    read(
        message,
        &Layout {
            spec: 1,
            tensors: 2,
            output_filter: Some(3),
        },
    )
}

/// PredictResponse: outputs = 1, model_spec = 2.
pub(super) fn response(message: &[u8]) -> Option<Predict<'_>> {
    read(
        message,
        &Layout {
            spec: 2,
            tensors: 1,
            output_filter: None,
        },
    )
}

fn read<'a>(message: &'a [u8], layout: &Layout) -> Option<Predict<'a>> {
    let mut out = Predict::default();
    let mut w = Wire::new_strict(message);
    while let Some(item) = w.next() {
        let (num, Field::Bytes(b)) = item.ok()? else {
            return None;
        };
        if num == layout.spec {
            // A repeated message field merges in prost: not the plain shape.
            if out.spec.is_some() {
                return None;
            }
            out.spec = Some(spec(b)?);
        } else if num == layout.tensors {
            let (alias, tensor) = entry(b)?;
            if out.tensors.len() >= MAX_TENSORS || out.tensors.iter().any(|(a, _)| *a == alias) {
                return None;
            }
            out.tensors.push((alias, tensor));
        } else if Some(num) == layout.output_filter {
            out.output_filter.push(std::str::from_utf8(b).ok()?);
        } else {
            return None;
        }
    }
    Some(out)
}

/// One map entry: key = 1 (string), value = 2 (bytes); either may be absent.
fn entry(b: &[u8]) -> Option<(&str, &[u8])> {
    let (mut key, mut value) = (None, None);
    let mut w = Wire::new_strict(b);
    while let Some(item) = w.next() {
        match item.ok()? {
            (1, Field::Bytes(k)) if key.is_none() => key = Some(std::str::from_utf8(k).ok()?),
            (2, Field::Bytes(v)) if value.is_none() => value = Some(v),
            _ => return None,
        }
    }
    Some((key.unwrap_or(""), value.unwrap_or(&[])))
}

/// ModelSpec: name = 1, version = 2 (Int64Value), signature_name = 3,
/// version_label = 4 (2 and 4 are a oneof).
fn spec(b: &[u8]) -> Option<Spec<'_>> {
    let mut s = Spec {
        name: "",
        version: None,
        version_label: None,
        signature_name: "",
    };
    let mut seen = [false; 5];
    let mut w = Wire::new_strict(b);
    while let Some(item) = w.next() {
        let (num, Field::Bytes(v)) = item.ok()? else {
            return None;
        };
        let slot = seen.get_mut(num as usize).filter(|_| num >= 1)?;
        if std::mem::replace(slot, true) {
            return None;
        }
        match num {
            1 => s.name = std::str::from_utf8(v).ok()?,
            2 => s.version = Some(int64_value(v)?),
            3 => s.signature_name = std::str::from_utf8(v).ok()?,
            _ => s.version_label = Some(std::str::from_utf8(v).ok()?),
        }
    }
    // Both arms of the oneof: the last one wins in prost.
    if s.version.is_some() && s.version_label.is_some() {
        return None;
    }
    Some(s)
}

/// google.protobuf.Int64Value: value = 1 (int64), 0 when absent.
fn int64_value(b: &[u8]) -> Option<i64> {
    let mut value = None;
    let mut w = Wire::new_strict(b);
    while let Some(item) = w.next() {
        match item.ok()? {
            (1, Field::Varint(v)) if value.is_none() => value = Some(v as i64),
            _ => return None,
        }
    }
    Some(value.unwrap_or(0))
}
