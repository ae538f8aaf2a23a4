//! TensorFlow `DataType` facts: enum names, the names `DataTypeString` prints
//! in error messages, element sizes, and the numpy spelling for fixes.

pub const DT_FLOAT: i32 = 1;
pub const DT_DOUBLE: i32 = 2;
pub const DT_INT32: i32 = 3;
pub const DT_STRING: i32 = 7;
pub const DT_INT64: i32 = 9;

/// (enum value, enum name, DataTypeString name, element size, numpy dtype)
type Row = (
    i32,
    &'static str,
    &'static str,
    Option<usize>,
    Option<&'static str>,
);

const TABLE: &[Row] = &[
    (0, "DT_INVALID", "INVALID", None, None),
    (1, "DT_FLOAT", "float", Some(4), Some("float32")),
    (2, "DT_DOUBLE", "double", Some(8), Some("float64")),
    (3, "DT_INT32", "int32", Some(4), Some("int32")),
    (4, "DT_UINT8", "uint8", Some(1), Some("uint8")),
    (5, "DT_INT16", "int16", Some(2), Some("int16")),
    (6, "DT_INT8", "int8", Some(1), Some("int8")),
    (7, "DT_STRING", "string", None, Some("object")),
    (8, "DT_COMPLEX64", "complex64", Some(8), Some("complex64")),
    (9, "DT_INT64", "int64", Some(8), Some("int64")),
    (10, "DT_BOOL", "bool", Some(1), Some("bool")),
    (11, "DT_QINT8", "qint8", Some(1), None),
    (12, "DT_QUINT8", "quint8", Some(1), None),
    (13, "DT_QINT32", "qint32", Some(4), None),
    (14, "DT_BFLOAT16", "bfloat16", Some(2), None),
    (15, "DT_QINT16", "qint16", Some(2), None),
    (16, "DT_QUINT16", "quint16", Some(2), None),
    (17, "DT_UINT16", "uint16", Some(2), Some("uint16")),
    (
        18,
        "DT_COMPLEX128",
        "complex128",
        Some(16),
        Some("complex128"),
    ),
    (19, "DT_HALF", "half", Some(2), Some("float16")),
    (20, "DT_RESOURCE", "resource", None, None),
    (21, "DT_VARIANT", "variant", None, None),
    (22, "DT_UINT32", "uint32", Some(4), Some("uint32")),
    (23, "DT_UINT64", "uint64", Some(8), Some("uint64")),
    (24, "DT_FLOAT8_E5M2", "float8_e5m2", Some(1), None),
    (25, "DT_FLOAT8_E4M3FN", "float8_e4m3fn", Some(1), None),
    (26, "DT_FLOAT8_E4M3FNUZ", "float8_e4m3fnuz", Some(1), None),
    (
        27,
        "DT_FLOAT8_E4M3B11FNUZ",
        "float8_e4m3b11fnuz",
        Some(1),
        None,
    ),
    (28, "DT_FLOAT8_E5M2FNUZ", "float8_e5m2fnuz", Some(1), None),
    (29, "DT_INT4", "int4", Some(1), None),
    (30, "DT_UINT4", "uint4", Some(1), None),
];

fn row(code: i32) -> Option<&'static Row> {
    usize::try_from(code).ok().and_then(|i| TABLE.get(i))
}

/// `DT_FLOAT` for 1; None for values outside the enum (and the `_REF` types,
/// which never appear in requests).
pub fn name(code: i32) -> Option<&'static str> {
    row(code).map(|r| r.1)
}

/// Enum value for a name such as `DT_FLOAT`.
pub fn code(name: &str) -> Option<i32> {
    TABLE.iter().find(|r| r.1 == name).map(|r| r.0)
}

/// The spelling TF uses in messages (`float`, `double`, `int64`).
pub fn tf_string(code: i32) -> Option<&'static str> {
    row(code).map(|r| r.2)
}

/// Enum value for a `DataTypeString` spelling, as found in server messages.
pub fn from_tf_string(s: &str) -> Option<i32> {
    TABLE.iter().find(|r| r.2 == s).map(|r| r.0)
}

pub fn size_of(code: i32) -> Option<usize> {
    row(code).and_then(|r| r.3)
}

pub fn numpy(code: i32) -> Option<&'static str> {
    row(code).and_then(|r| r.4)
}

/// TF's shape notation: `[2,3]`, `?` for unknown dims, `[]` for a scalar.
pub fn shape_string(dims: &[i64]) -> String {
    let mut s = String::with_capacity(2 + 4 * dims.len());
    push_shape(&mut s, dims);
    s
}

/// [`shape_string`] appended to `out`.
pub fn push_shape(out: &mut String, dims: &[i64]) {
    out.push('[');
    for (i, &d) in dims.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if d < 0 {
            out.push('?');
        } else {
            out.push_str(itoa::Buffer::new().format(d));
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_value() {
        for (i, r) in TABLE.iter().enumerate() {
            assert_eq!(r.0 as usize, i);
        }
        assert_eq!(name(1), Some("DT_FLOAT"));
        assert_eq!(name(101), None);
        assert_eq!(name(-3), None);
        assert_eq!(tf_string(2), Some("double"));
        assert_eq!(from_tf_string("int64"), Some(DT_INT64));
        assert_eq!(code("DT_STRING"), Some(DT_STRING));
        assert_eq!(numpy(DT_FLOAT), Some("float32"));
        assert_eq!(size_of(DT_DOUBLE), Some(8));
        assert_eq!(shape_string(&[-1, 10]), "[?,10]");
        assert_eq!(shape_string(&[]), "[]");
    }
}
