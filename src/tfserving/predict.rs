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

use smallvec::SmallVec;

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
    /// Inline up to four: most models take a few inputs.
    pub tensors: SmallVec<[(&'a str, &'a [u8]); 4]>,
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

#[cfg(test)]
mod tests {
    //! The reader is checked against prost, its reference: whenever it
    //! answers, prost must decode the same bytes to the same message. Valid
    //! messages come from prost's encoder; mutants of them (bit flips,
    //! inserted, deleted and duplicated bytes and fields, unknown fields,
    //! overlong varints, wide keys, bad UTF-8, group wire types, a second
    //! model_spec, a duplicate alias, ...) must either get the same answer
    //! or None.

    use super::super::{
        decode_request, decode_response, pb, resolved, spec_fields, tensors, Decoded, Kept, Method,
    };
    use super::{request, response, tfs, Predict, Spec};
    use bytes::Bytes;
    use pb::tfwire::views::{PredictRequestView, PredictResponseView};
    use prost::Message as _;
    use tfs::model_spec::VersionChoice;

    /// SplitMix64: small, deterministic, good enough to pick mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn one_in(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }

        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let n = self.below(max + 1);
            (0..n).map(|_| self.next() as u8).collect()
        }

        /// Short texts, often empty, sometimes multi-byte or with a NUL.
        fn text(&mut self) -> String {
            const CHARS: &[char] = &[
                'a', 'b', 'c', 'x', 'y', 'z', '0', '1', '9', '_', '/', ':', '-', 'é', 'ß', '日',
                '本', '🙂', '\u{0}',
            ];
            if self.one_in(5) {
                return String::new();
            }
            let n = 1 + self.below(10);
            (0..n).map(|_| self.pick(CHARS)).collect()
        }

        fn version(&mut self) -> i64 {
            match self.below(6) {
                0 => 0,
                1 => 1,
                2 => -1,
                3 => self.pick(&[i64::MAX, i64::MIN, 1 << 32, u32::MAX as i64]),
                4 => self.below(1000) as i64,
                _ => self.next() as i64,
            }
        }

        fn spec(&mut self) -> tfs::ModelSpec {
            tfs::ModelSpec {
                name: self.text(),
                version_choice: match self.below(3) {
                    0 => None,
                    1 => Some(VersionChoice::Version(self.version())),
                    _ => Some(VersionChoice::VersionLabel(self.text())),
                },
                signature_name: self.text(),
            }
        }

        /// Tensor bytes: random, empty, or a real TensorProto.
        fn tensor(&mut self) -> Vec<u8> {
            match self.below(4) {
                0 => Vec::new(),
                1 => self.bytes(40),
                _ => pb::tensorflow::TensorProto {
                    dtype: self.below(25) as i32,
                    tensor_shape: Some(pb::tensorflow::TensorShapeProto {
                        dim: (0..self.below(3))
                            .map(|_| pb::tensorflow::tensor_shape_proto::Dim {
                                size: self.below(4) as i64,
                                name: String::new(),
                            })
                            .collect(),
                        unknown_rank: false,
                    }),
                    float_val: (0..self.below(5)).map(|i| i as f32).collect(),
                    tensor_content: self.bytes(8).into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            }
        }
    }

    /// Which message: the two put model_spec and the tensor map at
    /// different field numbers, and only the request has output_filter.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        Request,
        Response,
    }

    impl Kind {
        fn spec_tag(self) -> u64 {
            match self {
                Kind::Request => 1,
                Kind::Response => 2,
            }
        }

        fn fast(self, message: &[u8]) -> Option<Predict<'_>> {
            match self {
                Kind::Request => request(message),
                Kind::Response => response(message),
            }
        }

        /// One prost-encoded field: a model_spec, a map entry or an
        /// output_filter entry, each the whole encoding of a message that
        /// holds only it. Messages are these pieces concatenated (which
        /// protobuf defines as merging them), so the fields come in any
        /// order and the encoding does not depend on HashMap order.
        fn spec_piece(self, spec: tfs::ModelSpec) -> Vec<u8> {
            match self {
                Kind::Request => PredictRequestView {
                    model_spec: Some(spec),
                    ..Default::default()
                }
                .encode_to_vec(),
                Kind::Response => PredictResponseView {
                    model_spec: Some(spec),
                    ..Default::default()
                }
                .encode_to_vec(),
            }
        }

        fn entry_piece(self, alias: &str, tensor: &[u8]) -> Vec<u8> {
            let map = [(alias.to_string(), Bytes::copy_from_slice(tensor))].into();
            match self {
                Kind::Request => PredictRequestView {
                    inputs: map,
                    ..Default::default()
                }
                .encode_to_vec(),
                Kind::Response => PredictResponseView {
                    outputs: map,
                    ..Default::default()
                }
                .encode_to_vec(),
            }
        }
    }

    fn filter_piece(entry: &str) -> Vec<u8> {
        PredictRequestView {
            output_filter: vec![entry.to_string()],
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// What a Predict message says, owned and in a comparable form:
    /// tensors sorted by alias.
    #[derive(Debug, PartialEq)]
    struct Said {
        spec: Option<(String, Option<i64>, Option<String>, String)>,
        tensors: Vec<(String, Vec<u8>)>,
        output_filter: Vec<String>,
    }

    fn said_spec(s: Spec<'_>) -> (String, Option<i64>, Option<String>, String) {
        (
            s.name.to_string(),
            s.version,
            s.version_label.map(str::to_string),
            s.signature_name.to_string(),
        )
    }

    fn said<'a>(
        spec: Option<Spec<'_>>,
        tensors: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        output_filter: &[impl AsRef<str>],
    ) -> Said {
        let mut tensors: Vec<(String, Vec<u8>)> = tensors
            .into_iter()
            .map(|(a, t)| (a.to_string(), t.to_vec()))
            .collect();
        tensors.sort();
        Said {
            spec: spec.map(said_spec),
            tensors,
            output_filter: output_filter
                .iter()
                .map(|s| s.as_ref().to_string())
                .collect(),
        }
    }

    fn said_fast(p: &Predict<'_>) -> Said {
        said(p.spec, p.tensors.iter().copied(), &p.output_filter)
    }

    /// prost's reading of the message, or its error.
    fn said_prost(kind: Kind, message: &[u8]) -> Result<Said, prost::DecodeError> {
        Ok(match kind {
            Kind::Request => {
                let m = PredictRequestView::decode(message)?;
                said(
                    m.model_spec.as_ref().map(Spec::from),
                    m.inputs.iter().map(|(a, t)| (a.as_str(), t.as_ref())),
                    &m.output_filter,
                )
            }
            Kind::Response => {
                let m = PredictResponseView::decode(message)?;
                said(
                    m.model_spec.as_ref().map(Spec::from),
                    m.outputs.iter().map(|(a, t)| (a.as_str(), t.as_ref())),
                    &[] as &[&str],
                )
            }
        })
    }

    /// What the decoder makes of the message through the fast reader,
    /// against what the prost path of the same function makes of it.
    fn decoded_both(kind: Kind, message: &[u8]) -> (String, String) {
        let data = Bytes::copy_from_slice(message);
        let kept = Kept::new(message, &[]);
        let (mut fast, mut reference) = (Decoded::default(), Decoded::default());
        match kind {
            Kind::Request => {
                decode_request(Method::Predict, data, &mut fast);
                let m = PredictRequestView::decode(message).expect("prost decodes");
                spec_fields(&mut reference, m.model_spec.as_ref(), Method::Predict);
                reference.inputs = tensors(m.inputs, kept);
                reference.output_filter = m.output_filter;
            }
            Kind::Response => {
                decode_response(Method::Predict, data, &mut fast);
                let m = PredictResponseView::decode(message).expect("prost decodes");
                resolved(&mut reference, m.model_spec.as_ref());
                reference.outputs = tensors(m.outputs, kept);
            }
        }
        (format!("{fast:?}"), format!("{reference:?}"))
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Outcome {
        /// The reader answered (and agreed with prost).
        Read,
        /// The reader declined; prost decodes the message.
        Declined,
        /// The reader declined; prost refuses the message.
        Refused,
    }

    /// The property: an answer from the reader is prost's answer.
    fn check(kind: Kind, message: &[u8], what: &dyn std::fmt::Display) -> Outcome {
        let prost = said_prost(kind, message);
        let Some(fast) = kind.fast(message) else {
            return match prost {
                Ok(_) => Outcome::Declined,
                Err(_) => Outcome::Refused,
            };
        };
        let fast = said_fast(&fast);
        match prost {
            Ok(prost) => assert_eq!(
                fast,
                prost,
                "{kind:?} {what}: the reader disagrees with prost on {}",
                hex(message)
            ),
            Err(e) => panic!(
                "{kind:?} {what}: the reader read {fast:?} where prost fails ({e}) on {}",
                hex(message)
            ),
        }
        let (fast, reference) = decoded_both(kind, message);
        assert_eq!(
            fast,
            reference,
            "{kind:?} {what}: decoded differently on {}",
            hex(message)
        );
        Outcome::Read
    }

    // ---- A message as a tree of fields, to mutate it field by field ----

    /// How a varint is written.
    #[derive(Clone, Copy, Debug)]
    enum Form {
        Shortest,
        /// With this many extra zero groups (at most 10 bytes in all).
        Padded(usize),
        /// Nine bytes of the low 63 bits, then this tenth byte.
        Tenth(u8),
    }

    #[derive(Clone, Debug)]
    enum Val {
        Varint(u64, Form),
        Fixed64(u64),
        Fixed32(u32),
        Bytes(Vec<u8>, Form),
        /// Length-delimited and itself a message.
        Msg(Vec<Node>, Form),
        /// Written as is after the key (a wire type 3 or 4 key's "payload").
        Raw(Vec<u8>),
        /// A start-group key, these fields, the matching end-group key.
        Group(Vec<Node>),
    }

    #[derive(Clone, Debug)]
    struct Node {
        /// field number << 3 | wire type, any 64-bit value.
        key: u64,
        key_form: Form,
        val: Val,
    }

    fn put_varint(out: &mut Vec<u8>, v: u64, form: Form) {
        let mut groups = Vec::new();
        match form {
            Form::Shortest | Form::Padded(_) => {
                let mut v = v;
                loop {
                    groups.push((v & 0x7f) as u8);
                    v >>= 7;
                    if v == 0 {
                        break;
                    }
                }
                if let Form::Padded(extra) = form {
                    let total = (groups.len() + extra).min(10).max(groups.len());
                    groups.resize(total, 0);
                }
            }
            Form::Tenth(last) => {
                groups.extend((0..9).map(|i| ((v >> (7 * i)) & 0x7f) as u8));
                groups.push(last);
                for (i, g) in groups.iter().enumerate() {
                    out.push(if i < 9 { g | 0x80 } else { *g });
                }
                return;
            }
        }
        let n = groups.len();
        for (i, g) in groups.into_iter().enumerate() {
            out.push(if i + 1 < n { g | 0x80 } else { g });
        }
    }

    fn write(nodes: &[Node], out: &mut Vec<u8>) {
        for n in nodes {
            put_varint(out, n.key, n.key_form);
            match &n.val {
                Val::Varint(v, form) => put_varint(out, *v, *form),
                Val::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
                Val::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
                Val::Bytes(b, form) => {
                    put_varint(out, b.len() as u64, *form);
                    out.extend_from_slice(b);
                }
                Val::Msg(children, form) => {
                    let inner = serialize(children);
                    put_varint(out, inner.len() as u64, *form);
                    out.extend_from_slice(&inner);
                }
                Val::Raw(b) => out.extend_from_slice(b),
                Val::Group(children) => {
                    write(children, out);
                    put_varint(out, (n.key & !7) | 4, Form::Shortest);
                }
            }
        }
    }

    fn serialize(nodes: &[Node]) -> Vec<u8> {
        let mut out = Vec::new();
        write(nodes, &mut out);
        out
    }

    fn take_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = *b.get(*pos)?;
            *pos += 1;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Fields of a well-formed message; length-delimited fields that are
    /// themselves messages (written back to the same bytes) become nodes.
    fn parse(b: &[u8], depth: usize) -> Option<Vec<Node>> {
        let mut nodes = Vec::new();
        let mut pos = 0;
        while pos < b.len() {
            let key = take_varint(b, &mut pos)?;
            let val = match key & 7 {
                0 => Val::Varint(take_varint(b, &mut pos)?, Form::Shortest),
                1 => {
                    let v = b.get(pos..pos + 8)?;
                    pos += 8;
                    Val::Fixed64(u64::from_le_bytes(v.try_into().ok()?))
                }
                2 => {
                    let len = usize::try_from(take_varint(b, &mut pos)?).ok()?;
                    let payload = b.get(pos..pos.checked_add(len)?)?;
                    pos += len;
                    match (depth < 4).then(|| parse(payload, depth + 1)).flatten() {
                        Some(children)
                            if !children.is_empty() && serialize(&children) == payload =>
                        {
                            Val::Msg(children, Form::Shortest)
                        }
                        _ => Val::Bytes(payload.to_vec(), Form::Shortest),
                    }
                }
                5 => {
                    let v = b.get(pos..pos + 4)?;
                    pos += 4;
                    Val::Fixed32(u32::from_le_bytes(v.try_into().ok()?))
                }
                _ => return None,
            };
            nodes.push(Node {
                key,
                key_form: Form::Shortest,
                val,
            });
        }
        Some(nodes)
    }

    /// Paths to every node, depth first.
    fn paths(nodes: &[Node], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        for (i, n) in nodes.iter().enumerate() {
            prefix.push(i);
            out.push(prefix.clone());
            if let Val::Msg(children, _) | Val::Group(children) = &n.val {
                paths(children, prefix, out);
            }
            prefix.pop();
        }
    }

    fn node_at<'a>(nodes: &'a mut [Node], path: &[usize]) -> &'a mut Node {
        let (first, rest) = path.split_first().expect("a path");
        let n = &mut nodes[*first];
        if rest.is_empty() {
            return n;
        }
        match &mut n.val {
            Val::Msg(children, _) | Val::Group(children) => node_at(children, rest),
            _ => unreachable!("paths lead through messages"),
        }
    }

    /// A random node, or None when the message has none.
    fn random_node<'a>(rng: &mut Rng, nodes: &'a mut [Node]) -> Option<&'a mut Node> {
        let mut all = Vec::new();
        paths(nodes, &mut Vec::new(), &mut all);
        if all.is_empty() {
            return None;
        }
        let path = all.swap_remove(rng.below(all.len()));
        Some(node_at(nodes, &path))
    }

    /// A random list of fields: the message itself or a nested one (an
    /// empty length-delimited field counts as an empty message).
    fn random_container<'a>(rng: &mut Rng, nodes: &'a mut Vec<Node>) -> &'a mut Vec<Node> {
        let mut all = Vec::new();
        paths(nodes, &mut Vec::new(), &mut all);
        all.retain(|p| {
            let n = node_at(nodes, p);
            matches!(&n.val, Val::Msg(..) | Val::Group(_))
                || matches!(&n.val, Val::Bytes(b, _) if b.is_empty() && n.key & 7 == 2)
        });
        if all.is_empty() || rng.one_in(3) {
            return nodes;
        }
        let path = all.swap_remove(rng.below(all.len()));
        let n = node_at(nodes, &path);
        if let Val::Bytes(_, form) = n.val {
            n.val = Val::Msg(Vec::new(), form);
        }
        match &mut n.val {
            Val::Msg(children, _) | Val::Group(children) => children,
            _ => unreachable!("a container"),
        }
    }

    fn insert_at(rng: &mut Rng, nodes: &mut Vec<Node>, node: Node) {
        let at = rng.below(nodes.len() + 1);
        nodes.insert(at, node);
    }

    fn plain(key: u64, val: Val) -> Node {
        Node {
            key,
            key_form: Form::Shortest,
            val,
        }
    }

    /// A field of a random number with a well-formed value of its wire type.
    fn random_field(rng: &mut Rng, num: u64) -> Node {
        match rng.below(4) {
            0 => plain(
                num << 3,
                Val::Varint(rng.next() >> rng.below(64), Form::Shortest),
            ),
            1 => plain(num << 3 | 1, Val::Fixed64(rng.next())),
            2 => plain(num << 3 | 2, Val::Bytes(rng.bytes(6), Form::Shortest)),
            _ => plain(num << 3 | 5, Val::Fixed32(rng.next() as u32)),
        }
    }

    fn random_form(rng: &mut Rng) -> Form {
        match rng.below(3) {
            0 => Form::Padded(1 + rng.below(9)),
            _ => Form::Tenth(rng.pick(&[0x00, 0x01, 0x02, 0x7f, 0x80])),
        }
    }

    const INVALID_UTF8: &[&[u8]] = &[
        b"\xff",
        b"\xc3",
        b"\xc0\x80",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xe6\x97",
    ];

    const MUTATIONS: &[&str] = &[
        "bit flip",
        "byte inserted",
        "byte deleted",
        "truncated",
        "field duplicated",
        "second model_spec",
        "unknown field",
        "duplicate alias",
        "overlong key",
        "overlong length or value",
        "key beyond u32",
        "invalid UTF-8",
        "group wire type",
        "wrong wire type",
        "field deleted",
        "fields swapped",
        "version and label",
        "field renumbered",
    ];

    /// Applies mutation `m` (an index into MUTATIONS) to the tree, or
    /// returns it as a byte-level mutation to apply after serializing.
    fn mutate_tree(
        rng: &mut Rng,
        kind: Kind,
        nodes: &mut Vec<Node>,
        aliases: &[String],
        m: usize,
    ) -> Option<usize> {
        match MUTATIONS[m] {
            "bit flip" | "byte inserted" | "byte deleted" | "truncated" => return Some(m),
            "field duplicated" => {
                let container = random_container(rng, nodes);
                if !container.is_empty() {
                    let copy = container[rng.below(container.len())].clone();
                    insert_at(rng, container, copy);
                }
            }
            "second model_spec" => {
                let spec = kind.spec_piece(rng.spec());
                let piece = parse(&spec, 0).expect("prost's encoding parses");
                for n in piece {
                    insert_at(rng, nodes, n);
                }
            }
            "unknown field" => {
                let num = match rng.below(3) {
                    0 => 1 + rng.below(8) as u64,
                    1 => 5 + rng.below(200) as u64,
                    _ => (1 << 29) - 1,
                };
                let field = random_field(rng, num);
                let container = random_container(rng, nodes);
                insert_at(rng, container, field);
            }
            "duplicate alias" => {
                let alias = if aliases.is_empty() || rng.one_in(4) {
                    rng.text()
                } else {
                    aliases[rng.below(aliases.len())].clone()
                };
                let first = kind.entry_piece(&alias, &rng.tensor());
                let second = kind.entry_piece(&alias, &rng.tensor());
                for piece in [first, second] {
                    for n in parse(&piece, 0).expect("prost's encoding parses") {
                        insert_at(rng, nodes, n);
                    }
                }
            }
            "overlong key" => {
                if let Some(n) = random_node(rng, nodes) {
                    n.key_form = random_form(rng);
                }
            }
            "overlong length or value" => {
                if let Some(n) = random_node(rng, nodes) {
                    let form = random_form(rng);
                    match &mut n.val {
                        Val::Varint(_, f) | Val::Bytes(_, f) | Val::Msg(_, f) => *f = form,
                        _ => n.key_form = form,
                    }
                }
            }
            "key beyond u32" => {
                if let Some(n) = random_node(rng, nodes) {
                    n.key |= match rng.below(3) {
                        0 => 1 << 32,
                        1 => 1 << 63,
                        _ => rng.next() & !u64::from(u32::MAX),
                    };
                }
            }
            "invalid UTF-8" => {
                let bad = rng.pick(INVALID_UTF8);
                let mut all = Vec::new();
                paths(nodes, &mut Vec::new(), &mut all);
                all.retain(|p| matches!(node_at(nodes, p).val, Val::Bytes(..)));
                if all.is_empty() {
                    return Some(0); // nothing to spoil: a bit flip instead
                }
                let path = all.swap_remove(rng.below(all.len()));
                if let Val::Bytes(b, _) = &mut node_at(nodes, &path).val {
                    let at = rng.below(b.len() + 1);
                    b.splice(at..at, bad.iter().copied());
                }
            }
            "group wire type" => match rng.below(3) {
                // A well-formed group: prost skips it when the number is unknown.
                0 => {
                    let num = 1 + rng.below(10) as u64;
                    let inner = (0..rng.below(3))
                        .map(|_| {
                            let num = 1 + rng.below(10) as u64;
                            random_field(rng, num)
                        })
                        .collect();
                    let group = plain(num << 3 | 3, Val::Group(inner));
                    let container = random_container(rng, nodes);
                    insert_at(rng, container, group);
                }
                // A lone start or end of a group.
                1 => {
                    let key = (1 + rng.below(10) as u64) << 3 | rng.pick(&[3, 4]);
                    let container = random_container(rng, nodes);
                    insert_at(rng, container, plain(key, Val::Raw(vec![])));
                }
                // A field's wire type turned into 3 or 4, its bytes left as they are.
                _ => {
                    if let Some(n) = random_node(rng, nodes) {
                        let mut rest = Vec::new();
                        write(std::slice::from_ref(n), &mut rest);
                        let mut key_len = Vec::new();
                        put_varint(&mut key_len, n.key, n.key_form);
                        rest.drain(..key_len.len());
                        n.key = (n.key & !7) | rng.pick(&[3, 4]);
                        n.val = Val::Raw(rest);
                    }
                }
            },
            "wrong wire type" => {
                if let Some(n) = random_node(rng, nodes) {
                    *n = random_field(rng, n.key >> 3);
                }
            }
            "field deleted" => {
                let container = random_container(rng, nodes);
                if !container.is_empty() {
                    container.remove(rng.below(container.len()));
                }
            }
            "fields swapped" => {
                let container = random_container(rng, nodes);
                if !container.is_empty() {
                    let (a, b) = (rng.below(container.len()), rng.below(container.len()));
                    container.swap(a, b);
                }
            }
            "version and label" => {
                let tag = kind.spec_tag();
                let spec = nodes.iter_mut().find(|n| n.key == tag << 3 | 2);
                let children = match spec {
                    Some(n) => {
                        if matches!(&n.val, Val::Bytes(b, _) if b.is_empty()) {
                            n.val = Val::Msg(Vec::new(), Form::Shortest);
                        }
                        match &mut n.val {
                            Val::Msg(children, _) => children,
                            _ => return Some(0), // not a message: a bit flip instead
                        }
                    }
                    None => {
                        nodes.push(plain(tag << 3 | 2, Val::Msg(Vec::new(), Form::Shortest)));
                        match &mut nodes.last_mut().expect("just pushed").val {
                            Val::Msg(children, _) => children,
                            _ => unreachable!("just pushed"),
                        }
                    }
                };
                let field = if rng.one_in(2) {
                    let value = if rng.one_in(3) {
                        vec![]
                    } else {
                        vec![plain(
                            1 << 3,
                            Val::Varint(rng.version() as u64, Form::Shortest),
                        )]
                    };
                    plain(2 << 3 | 2, Val::Msg(value, Form::Shortest))
                } else {
                    plain(
                        4 << 3 | 2,
                        Val::Bytes(rng.text().into_bytes(), Form::Shortest),
                    )
                };
                insert_at(rng, children, field);
            }
            "field renumbered" => {
                if let Some(n) = random_node(rng, nodes) {
                    n.key = (1 + rng.below(6) as u64) << 3 | (n.key & 7);
                }
            }
            other => unreachable!("{other}"),
        }
        None
    }

    fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>, m: usize) {
        match MUTATIONS[m] {
            "bit flip" => {
                for _ in 0..1 + rng.below(3) {
                    if !b.is_empty() {
                        let at = rng.below(b.len());
                        b[at] ^= 1 << rng.below(8);
                    }
                }
            }
            "byte inserted" => {
                let at = rng.below(b.len() + 1);
                b.insert(at, rng.next() as u8);
            }
            "byte deleted" => {
                if !b.is_empty() {
                    b.remove(rng.below(b.len()));
                }
            }
            "truncated" => b.truncate(rng.below(b.len() + 1)),
            other => unreachable!("{other}"),
        }
    }

    /// A valid message of `kind` from prost's encoder, and what it says.
    fn valid(rng: &mut Rng, kind: Kind) -> (Vec<u8>, Said) {
        let mut pieces = Vec::new();
        let spec = (!rng.one_in(10)).then(|| rng.spec());
        if let Some(s) = &spec {
            pieces.push(kind.spec_piece(s.clone()));
        }
        let mut tensors: Vec<(String, Vec<u8>)> = Vec::new();
        for _ in 0..rng.below(7) {
            let alias = rng.text();
            if tensors.iter().all(|(a, _)| *a != alias) {
                tensors.push((alias, rng.tensor()));
            }
        }
        for (alias, t) in &tensors {
            pieces.push(kind.entry_piece(alias, t));
        }
        let mut output_filter = Vec::new();
        if kind == Kind::Request {
            for _ in 0..rng.below(4) {
                output_filter.push(rng.text());
            }
        }
        // Pieces in random order, output_filter entries in theirs.
        for i in (1..pieces.len()).rev() {
            pieces.swap(i, rng.below(i + 1));
        }
        let mut after = 0;
        for f in &output_filter {
            let at = after + rng.below(pieces.len() - after + 1);
            pieces.insert(at, filter_piece(f));
            after = at + 1;
        }
        let said = said(
            spec.as_ref().map(Spec::from),
            tensors.iter().map(|(a, t)| (a.as_str(), t.as_slice())),
            &output_filter,
        );
        (pieces.concat(), said)
    }

    fn agreement(kind: Kind, seed: u64) {
        const MESSAGES: usize = 300;
        const MUTANTS: usize = 40;
        let mut rng = Rng(seed);
        let mut outcomes = [0usize; 3];
        let mut by_mutation = vec![[0usize; 3]; MUTATIONS.len()];
        for i in 0..MESSAGES {
            let (message, expected) = valid(&mut rng, kind);
            // The plain shape: the reader must take it, and get it right.
            let fast = kind.fast(&message).unwrap_or_else(|| {
                panic!(
                    "{kind:?} message {i}: the reader declines a valid message {}",
                    hex(&message)
                )
            });
            assert_eq!(said_fast(&fast), expected, "{kind:?} message {i}");
            assert_eq!(
                check(kind, &message, &format!("message {i}")),
                Outcome::Read
            );

            let tree = parse(&message, 0).expect("prost's encoding parses");
            assert_eq!(
                serialize(&tree),
                message,
                "the tree writes the message back"
            );
            let aliases: Vec<String> = expected.tensors.iter().map(|(a, _)| a.clone()).collect();
            for j in 0..MUTANTS {
                let mut nodes = tree.clone();
                let mut applied = Vec::new();
                let mut later = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    let m = rng.below(MUTATIONS.len());
                    applied.push(MUTATIONS[m]);
                    if let Some(m) = mutate_tree(&mut rng, kind, &mut nodes, &aliases, m) {
                        later.push(m);
                    }
                }
                let mut mutant = serialize(&nodes);
                for m in later {
                    mutate_bytes(&mut rng, &mut mutant, m);
                }
                let what = format!("message {i} mutant {j} ({})", applied.join(", "));
                let outcome = check(kind, &mutant, &what) as usize;
                outcomes[outcome] += 1;
                for name in &applied {
                    let m = MUTATIONS.iter().position(|x| x == name).expect("known");
                    by_mutation[m][outcome] += 1;
                }
            }
        }
        eprintln!(
            "{kind:?} seed {seed:#x}: {MESSAGES} valid messages read; of {} mutants, \
             {} read and agreed, {} declined (prost decodes), {} declined (prost fails)",
            MESSAGES * MUTANTS,
            outcomes[0],
            outcomes[1],
            outcomes[2]
        );
        for (name, [read, declined, refused]) in MUTATIONS.iter().zip(&by_mutation) {
            eprintln!("  {name:>26}: read {read:5}, declined {declined:5}, refused {refused:5}");
        }
        // Not vacuous: mutants reach all three outcomes in numbers.
        let total = MESSAGES * MUTANTS;
        assert!(outcomes[0] > total / 10, "few mutants read: {outcomes:?}");
        assert!(
            outcomes[1] > total / 20,
            "few mutants declined: {outcomes:?}"
        );
        assert!(
            outcomes[2] > total / 20,
            "few mutants refused: {outcomes:?}"
        );
    }

    /// `PREDICT_SEED=<n>` runs the property from another seed.
    fn seed(default: u64) -> u64 {
        std::env::var("PREDICT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    #[test]
    fn requests_agree_with_prost() {
        agreement(Kind::Request, seed(0x7f3a_1c00_0000_0001));
    }

    #[test]
    fn responses_agree_with_prost() {
        agreement(Kind::Response, seed(0x7f3a_1c00_0000_0002));
    }

    // ---- Explicit cases ----

    fn key(num: u64, wire: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, num << 3 | wire, Form::Shortest);
        out
    }

    /// A length-delimited field.
    fn ld(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = key(num, 2);
        put_varint(&mut out, payload.len() as u64, Form::Shortest);
        out.extend_from_slice(payload);
        out
    }

    fn varint(num: u64, v: u64) -> Vec<u8> {
        let mut out = key(num, 0);
        put_varint(&mut out, v, Form::Shortest);
        out
    }

    fn prost_spec(message: &[u8]) -> Option<tfs::ModelSpec> {
        PredictRequestView::decode(message)
            .expect("prost decodes")
            .model_spec
    }

    #[test]
    fn version_zero_explicit_or_empty() {
        let explicit = ld(1, &[ld(1, b"m"), ld(2, &varint(1, 0))].concat());
        let empty = ld(1, &[ld(1, b"m"), ld(2, b"")].concat());
        for message in [&explicit, &empty] {
            let spec = request(message).expect("read").spec.expect("a spec");
            assert_eq!(spec.version, Some(0), "{}", hex(message));
            assert_eq!(spec.version_label, None);
            assert_eq!(spec.name, "m");
            assert_eq!(
                prost_spec(message).expect("a spec").version_choice,
                Some(VersionChoice::Version(0))
            );
            assert_eq!(check(Kind::Request, message, &"version 0"), Outcome::Read);
        }
        // Negative versions take ten bytes.
        let negative = ld(1, &ld(2, &varint(1, -7i64 as u64)));
        let spec = request(&negative).expect("read").spec.expect("a spec");
        assert_eq!(spec.version, Some(-7));
        assert_eq!(
            check(Kind::Request, &negative, &"version -7"),
            Outcome::Read
        );
        // The response's spec is field 2.
        let resp = ld(2, &ld(2, &varint(1, 0)));
        let spec = response(&resp).expect("read").spec.expect("a spec");
        assert_eq!(spec.version, Some(0));
        assert_eq!(check(Kind::Response, &resp, &"version 0"), Outcome::Read);
    }

    #[test]
    fn map_entry_without_key_or_value() {
        let cases: [(Vec<u8>, &str, &[u8]); 4] = [
            (ld(2, b""), "", b""),
            (ld(2, &ld(2, b"\x08\x01")), "", b"\x08\x01"),
            (ld(2, &ld(1, b"x")), "x", b""),
            // Value before key.
            (ld(2, &[ld(2, b"v"), ld(1, b"k")].concat()), "k", b"v"),
        ];
        for (message, alias, tensor) in cases {
            let read = request(&message).expect("read");
            assert_eq!(
                read.tensors.as_slice(),
                [(alias, tensor)],
                "{}",
                hex(&message)
            );
            let m = PredictRequestView::decode(message.as_slice()).expect("prost decodes");
            assert_eq!(m.inputs.len(), 1);
            assert_eq!(m.inputs.get(alias).map(|b| b.as_ref()), Some(tensor));
            assert_eq!(check(Kind::Request, &message, &"entry"), Outcome::Read);
            // The same entries in a response (tensors at field 1).
            let mut resp = message.clone();
            resp[0] = 0x0a;
            let read = response(&resp).expect("read");
            assert_eq!(read.tensors.as_slice(), [(alias, tensor)]);
            assert_eq!(check(Kind::Response, &resp, &"entry"), Outcome::Read);
        }
    }

    #[test]
    fn version_and_label_both_present_are_left_to_prost() {
        let version = ld(2, &varint(1, 3));
        let label = ld(4, b"stable");
        for (spec, last) in [
            (
                [version.clone(), label.clone()].concat(),
                VersionChoice::VersionLabel("stable".into()),
            ),
            ([label, version].concat(), VersionChoice::Version(3)),
        ] {
            let message = ld(1, &spec);
            assert!(request(&message).is_none(), "{}", hex(&message));
            // prost keeps the last arm of the oneof.
            assert_eq!(
                prost_spec(&message).expect("a spec").version_choice,
                Some(last)
            );
            assert!(response(&ld(2, &spec)).is_none());
        }
    }

    #[test]
    fn repeated_model_spec_is_left_to_prost() {
        let first = ld(1, &[ld(1, b"a"), ld(2, &varint(1, 5))].concat());
        let second = ld(1, &ld(3, b"sig"));
        let message = [first.clone(), second.clone()].concat();
        assert!(request(&message).is_none());
        // prost merges the two.
        let spec = prost_spec(&message).expect("a spec");
        assert_eq!(
            (spec.name.as_str(), spec.signature_name.as_str()),
            ("a", "sig")
        );
        assert_eq!(spec.version_choice, Some(VersionChoice::Version(5)));
        // Even an identical copy, and in a response.
        assert!(request(&[first.clone(), first.clone()].concat()).is_none());
        let resp = |b: &[u8]| {
            let mut b = b.to_vec();
            b[0] = 0x12;
            b
        };
        assert!(response(&[resp(&first), resp(&second)].concat()).is_none());
    }

    #[test]
    fn other_shapes_are_left_to_prost() {
        let entry = ld(2, &[ld(1, b"x"), ld(2, b"1")].concat());
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            // (what, message, does prost decode it)
            (
                "duplicate alias",
                [entry.clone(), ld(2, &[ld(1, b"x"), ld(2, b"2")].concat())].concat(),
                true,
            ),
            (
                "unknown field",
                [entry.clone(), varint(9, 1)].concat(),
                true,
            ),
            ("unknown field in spec", ld(1, &varint(7, 1)), true),
            ("unknown field in entry", ld(2, &varint(3, 1)), true),
            (
                "unknown field in version",
                ld(1, &ld(2, &varint(2, 1))),
                true,
            ),
            (
                "duplicate name",
                ld(1, &[ld(1, b"a"), ld(1, b"b")].concat()),
                true,
            ),
            (
                "duplicate key in entry",
                ld(2, &[ld(1, b"a"), ld(1, b"b")].concat()),
                true,
            ),
            (
                "unknown group",
                [key(9, 3), varint(1, 1), key(9, 4), entry.clone()].concat(),
                true,
            ),
            ("lone end group", [entry.clone(), key(9, 4)].concat(), false),
            (
                "group as model_spec",
                [key(1, 3), key(1, 4)].concat(),
                false,
            ),
            ("invalid UTF-8 alias", ld(2, &ld(1, b"\xff")), false),
            ("invalid UTF-8 name", ld(1, &ld(1, b"\xc0\x80")), false),
            ("invalid UTF-8 filter", ld(3, b"\xed\xa0\x80"), false),
            ("varint version as bytes", ld(1, &varint(2, 1)), false),
            (
                "tenth varint byte 2",
                ld(1, &ld(2, &[vec![0x08], vec![0xff; 9], vec![0x02]].concat())),
                false,
            ),
            (
                "key beyond u32",
                vec![0x8a, 0x80, 0x80, 0x80, 0x10, 0x00],
                false,
            ),
            ("truncated", entry[..entry.len() - 1].to_vec(), false),
        ];
        for (what, message, decodes) in cases {
            assert!(request(&message).is_none(), "{what}: {}", hex(&message));
            assert_eq!(
                PredictRequestView::decode(message.as_slice()).is_ok(),
                decodes,
                "{what}"
            );
        }
        // A tenth varint byte of 1 is still a varint: both read it.
        let tenth = [ld(
            1,
            &ld(2, &[vec![0x08], vec![0xff; 9], vec![0x01]].concat()),
        )]
        .concat();
        assert_eq!(check(Kind::Request, &tenth, &"tenth byte 1"), Outcome::Read);
        // output_filter is not a response field.
        assert!(response(&ld(3, b"x")).is_none());
        assert!(PredictResponseView::decode(ld(3, b"x").as_slice()).is_ok());
    }
}
