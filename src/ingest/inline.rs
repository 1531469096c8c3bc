//! Arrays that arrive inside an event's JSON (`"img": [[1.0, 2.0], ...]`), turned into a
//! frame's little-endian bytes so they can join the Zarr store like any external frame.

use serde_json::Value;

use super::dtype::{Dtype, Kind};

/// The elements of the nested list `value`, which must have exactly `shape`, as `dtype`.
pub fn to_bytes(value: &Value, shape: &[u64], dtype: Dtype) -> Result<Vec<u8>, String> {
    if dtype.frame_bytes(shape).is_none() {
        return Err(format!("shape {shape:?} is too large for one frame"));
    }
    // Grown as the payload is walked, never sized from the shape: a descriptor may declare
    // [2^20, 2^20] over a payload of ten numbers, and the walk refuses it at the first list.
    let mut out = Vec::new();
    walk(value, shape, dtype, &mut out, &mut Vec::new())?;
    Ok(out)
}

/// The inverse, for values read from files: little-endian `bytes` of `shape` as JSON (a number
/// for shape `[]`, nested lists otherwise). NaN and infinities, which JSON lacks, become null.
pub fn to_json(bytes: &[u8], shape: &[u64], dtype: Dtype) -> Value {
    let mut elements = bytes.chunks_exact(dtype.size).map(|b| number(b, dtype));
    nest(&mut elements, shape)
}

fn nest(elements: &mut impl Iterator<Item = Value>, shape: &[u64]) -> Value {
    match shape.split_first() {
        None => elements.next().unwrap_or(Value::Null),
        Some((&len, rest)) => Value::Array((0..len).map(|_| nest(elements, rest)).collect()),
    }
}

fn number(b: &[u8], dtype: Dtype) -> Value {
    let mut le = [0u8; 8];
    le[..b.len()].copy_from_slice(b);
    let negative = b.last().is_some_and(|&top| top & 0x80 != 0);
    match dtype.kind {
        Kind::Bool => Value::Bool(b.iter().any(|&x| x != 0)),
        Kind::UInt => u64::from_le_bytes(le).into(),
        Kind::Int => {
            // Sign-extend the narrower integer.
            if negative {
                le[b.len()..].fill(0xff);
            }
            i64::from_le_bytes(le).into()
        }
        Kind::Float => {
            let v = match b.len() {
                4 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                _ => f64::from_le_bytes(le),
            };
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
        }
    }
}

fn walk(
    value: &Value,
    shape: &[u64],
    dtype: Dtype,
    out: &mut Vec<u8>,
    at: &mut Vec<usize>,
) -> Result<(), String> {
    let Some((&len, rest)) = shape.split_first() else {
        return element(value, dtype, out).map_err(|e| format!("element {at:?}: {e}"));
    };
    let items = value
        .as_array()
        .ok_or_else(|| format!("at {at:?}: expected a list of {len}, found {value}"))?;
    if items.len() as u64 != len {
        return Err(format!(
            "at {at:?}: a list of {} where the descriptor's shape says {len}",
            items.len()
        ));
    }
    for (i, item) in items.iter().enumerate() {
        at.push(i);
        walk(item, rest, dtype, out, at)?;
        at.pop();
    }
    Ok(())
}

fn element(value: &Value, dtype: Dtype, out: &mut Vec<u8>) -> Result<(), String> {
    let fits = || format!("{value} does not fit {dtype}");
    match dtype.kind {
        Kind::Bool => out.push(u8::from(value.as_bool().ok_or_else(fits)?)),
        Kind::Float => {
            let v = value.as_f64().ok_or_else(fits)?;
            match dtype.size {
                8 => out.extend(v.to_le_bytes()),
                4 => out.extend((v as f32).to_le_bytes()),
                _ => {
                    return Err(format!(
                        "inline {dtype} is not supported; use float32 or 64"
                    ));
                }
            }
        }
        Kind::Int => {
            let v = value.as_i64().ok_or_else(fits)?;
            let bytes = v.to_le_bytes();
            let size = dtype.size;
            // Fits when truncating and sign-extending back gives the same value.
            let shift = 64 - 8 * size as u32;
            if shift > 0 && (v << shift) >> shift != v {
                return Err(fits());
            }
            out.extend(&bytes[..size]);
        }
        Kind::UInt => {
            let v = value.as_u64().ok_or_else(fits)?;
            let size = dtype.size;
            if size < 8 && v >> (8 * size) != 0 {
                return Err(fits());
            }
            out.extend(&v.to_le_bytes()[..size]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_lists_become_c_order_bytes() {
        let v = json!([[1, 2, 3], [4, 5, 6]]);
        let (u1, _) = Dtype::parse_numpy("|u1").unwrap();
        assert_eq!(to_bytes(&v, &[2, 3], u1).unwrap(), vec![1, 2, 3, 4, 5, 6]);
        let f8 = to_bytes(&json!([[1.5]]), &[1, 1], Dtype::FLOAT64).unwrap();
        assert_eq!(f8, 1.5f64.to_le_bytes().to_vec());
        let (i2, _) = Dtype::parse_numpy("<i2").unwrap();
        assert_eq!(
            to_bytes(&json!([[-2]]), &[1, 1], i2).unwrap(),
            vec![0xfe, 0xff]
        );
    }

    #[test]
    fn bytes_read_back_as_json_values() {
        let (i8_, _) = Dtype::parse_numpy("<i8").unwrap();
        let bytes: Vec<u8> = [-3i64, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(to_json(&bytes, &[2], i8_), json!([-3, 7]));
        assert_eq!(to_json(&bytes[..8], &[], i8_), json!(-3));
        assert_eq!(to_json(&bytes[..8], &[1], i8_), json!([-3]));
        let (i2, _) = Dtype::parse_numpy("<i2").unwrap();
        assert_eq!(to_json(&[0xfe, 0xff], &[], i2), json!(-2));
        let (f4, _) = Dtype::parse_numpy("<f4").unwrap();
        assert_eq!(to_json(&1.5f32.to_le_bytes(), &[], f4), json!(1.5));
        assert_eq!(
            to_json(&f64::NAN.to_le_bytes(), &[], Dtype::FLOAT64),
            Value::Null
        );
        let (u1, _) = Dtype::parse_numpy("|u1").unwrap();
        assert_eq!(to_json(&[1, 2, 3, 4], &[2, 2], u1), json!([[1, 2], [3, 4]]));
        // Round trip through to_bytes.
        let v = json!([[1, -2], [3, 40000]]);
        let (i4, _) = Dtype::parse_numpy("<i4").unwrap();
        assert_eq!(to_json(&to_bytes(&v, &[2, 2], i4).unwrap(), &[2, 2], i4), v);
    }

    #[test]
    fn wrong_shapes_and_values_are_refused() {
        let (u1, _) = Dtype::parse_numpy("|u1").unwrap();
        assert!(to_bytes(&json!([[1, 2], [3]]), &[2, 2], u1).is_err());
        assert!(to_bytes(&json!([[1, 2]]), &[2, 2], u1).is_err());
        assert!(to_bytes(&json!([[256]]), &[1, 1], u1).is_err());
        assert!(to_bytes(&json!([["a"]]), &[1, 1], Dtype::FLOAT64).is_err());
        let (i1, _) = Dtype::parse_numpy("|i1").unwrap();
        assert!(to_bytes(&json!([[-129]]), &[1, 1], i1).is_err());
        assert!(to_bytes(&json!([[-128]]), &[1, 1], i1).is_ok());
        // A huge declared shape over a tiny payload: refused, nothing allocated for it.
        assert!(to_bytes(&json!([[1.0]]), &[1 << 20, 1 << 20], Dtype::FLOAT64).is_err());
        assert!(to_bytes(&json!([[1]]), &[1 << 62, 4], u1).is_err());
    }
}
