//! The `.npy` format (numpy's `NEP 1`): magic, version, a header that is a Python dict literal
//! `{'descr': '<u2', 'fortran_order': False, 'shape': (64, 64), }`, then the raw elements.
//!
//! Parsed by hand: the header grammar numpy writes is tiny, and a crate for it would bring
//! more than it saves. Only what numpy itself writes for plain arrays is accepted.

use super::dtype::{Dtype, DtypeError};

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: Dtype,
    /// The file's elements are big-endian (they are swapped on reading).
    pub big_endian: bool,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
    /// Where the elements start.
    pub data_offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (no \\x93NUMPY magic)")]
    Magic,
    #[error("unsupported .npy version {0}.{1}")]
    Version(u8, u8),
    #[error("the .npy header is truncated")]
    Truncated,
    #[error("the .npy header is not understood: {0}")]
    Header(String),
    #[error(transparent)]
    Dtype(#[from] DtypeError),
}

/// How many bytes to read to be sure of having the whole header of an ordinary file.
pub const HEADER_PROBE: usize = 4096;

/// The longest header accepted (numpy writes a few hundred bytes; format 1.0 allows 64 KiB):
/// a file is never read further than this past its frame's size.
pub const MAX_HEADER: usize = 1 << 20;

/// Parses the header at the start of `bytes` (which may hold more than the header).
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, NpyError> {
    if bytes.len() < 10 {
        return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(6)]) {
            NpyError::Truncated
        } else {
            NpyError::Magic
        });
    }
    if &bytes[..6] != MAGIC {
        return Err(NpyError::Magic);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len, start) = match major {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or(NpyError::Truncated)?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (usize::try_from(len).map_err(|_| NpyError::Truncated)?, 12)
        }
        _ => return Err(NpyError::Version(major, minor)),
    };
    if len > MAX_HEADER {
        return Err(NpyError::Header(format!(
            "the header claims {len} bytes; at most {MAX_HEADER} are accepted"
        )));
    }
    let end = start.checked_add(len).ok_or(NpyError::Truncated)?;
    let header = bytes.get(start..end).ok_or(NpyError::Truncated)?;
    let text = std::str::from_utf8(header).map_err(|_| NpyError::Header("not UTF-8".into()))?;
    let descr = dict_value(text, "descr")?;
    let descr = unquote(descr).ok_or_else(|| {
        NpyError::Header(format!(
            "descr {descr} is not a plain type string (structured arrays are not frames)"
        ))
    })?;
    let (dtype, big_endian) = Dtype::parse_numpy(descr)?;
    let fortran_order = match dict_value(text, "fortran_order")? {
        "True" => true,
        "False" => false,
        other => return Err(NpyError::Header(format!("fortran_order is {other}"))),
    };
    let shape = parse_tuple(dict_value(text, "shape")?)?;
    // Checked here, where the numbers enter: every size computed from this header later
    // may then assume it does not overflow.
    if dtype.frame_bytes(&shape).is_none() {
        return Err(NpyError::Header(format!(
            "shape {shape:?} of {dtype} is too large for one frame"
        )));
    }
    Ok(NpyHeader {
        dtype,
        big_endian,
        fortran_order,
        shape,
        data_offset: end,
    })
}

/// The text of `key`'s value in the header dict, up to the next top-level comma or brace.
fn dict_value<'a>(text: &'a str, key: &str) -> Result<&'a str, NpyError> {
    let missing = || NpyError::Header(format!("no '{key}' key"));
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))
        .ok_or_else(missing)?;
    let rest = &text[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':').ok_or_else(missing)?;
    let rest = rest.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim_end()),
            _ => {}
        }
    }
    Err(NpyError::Header(format!("'{key}' has no end")))
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    ['\'', '"'].into_iter().find_map(|q| {
        s.strip_prefix(q)
            .and_then(|r| r.strip_suffix(q))
            .filter(|inner| !inner.contains(q))
    })
}

fn parse_tuple(s: &str) -> Result<Vec<u64>, NpyError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| NpyError::Header(format!("shape {s} is not a tuple")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim_end_matches('L')
                .parse::<u64>()
                .map_err(|_| NpyError::Header(format!("shape {s} has a non-integer {p:?}")))
        })
        .collect()
}

/// Reorders a Fortran-order (column-major) buffer of `shape` into C order; `None` when `data`
/// is not exactly `shape` elements of `item` bytes.
pub fn fortran_to_c(data: &[u8], shape: &[u64], item: usize) -> Option<Vec<u8>> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let n = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    if item == 0 || n.checked_mul(item)? != data.len() {
        return None;
    }
    let mut out = vec![0u8; data.len()];
    // C-order strides (in elements) of the output.
    let mut c_strides = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        c_strides[i] = c_strides[i + 1] * dims[i + 1];
    }
    let mut index = vec![0usize; dims.len()];
    for f in 0..n {
        // `index` is the multi-index of element `f` in Fortran order (first axis fastest).
        let c: usize = index.iter().zip(&c_strides).map(|(i, s)| i * s).sum();
        out[c * item..(c + 1) * item].copy_from_slice(&data[f * item..(f + 1) * item]);
        for (axis, i) in index.iter_mut().enumerate() {
            *i += 1;
            if *i < dims[axis] {
                break;
            }
            *i = 0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::dtype::Kind;

    fn file(header: &str) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend([1, 0]);
        v.extend((header.len() as u16).to_le_bytes());
        v.extend(header.as_bytes());
        v
    }

    #[test]
    fn reads_what_numpy_writes() {
        let h = parse_header(&file(
            "{'descr': '<u2', 'fortran_order': False, 'shape': (64, 64), }          \n",
        ))
        .unwrap();
        assert_eq!(h.dtype.kind, Kind::UInt);
        assert_eq!(
            (h.dtype.size, h.big_endian, h.fortran_order),
            (2, false, false)
        );
        assert_eq!(h.shape, vec![64, 64]);
        let h = parse_header(&file(
            "{'descr': '>f8', 'fortran_order': True, 'shape': (3,), }\n",
        ))
        .unwrap();
        assert_eq!(
            (h.big_endian, h.fortran_order, h.shape),
            (true, true, vec![3])
        );
        let h = parse_header(&file(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (), }\n",
        ))
        .unwrap();
        assert!(h.shape.is_empty());
    }

    #[test]
    fn shared_frame_file_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/bluesky/frames/df4fa8_0.npy"
        );
        let bytes = std::fs::read(path).unwrap();
        let h = parse_header(&bytes).unwrap();
        assert_eq!(h.shape, vec![64, 64]);
        assert_eq!(bytes.len() - h.data_offset, 64 * 64 * 2);
    }

    #[test]
    fn refuses_what_is_not_a_plain_array() {
        assert_eq!(parse_header(b"PK\x03\x04 not numpy"), Err(NpyError::Magic));
        assert_eq!(
            parse_header(b"\x93NUMPY\x01\x00\xff\x00{'descr'"),
            Err(NpyError::Truncated)
        );
        assert!(matches!(
            parse_header(&file(
                "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,), }"
            )),
            Err(NpyError::Header(_))
        ));
        assert!(matches!(
            parse_header(&file(
                "{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }"
            )),
            Err(NpyError::Dtype(_))
        ));
        assert!(matches!(
            parse_header(&file("{'descr': '<u2', 'shape': (2,), }")),
            Err(NpyError::Header(_))
        ));
        let mut v = file("{'descr': '<u2', 'fortran_order': False, 'shape': (2,), }");
        v[6] = 9;
        assert_eq!(parse_header(&v), Err(NpyError::Version(9, 0)));
    }

    #[test]
    fn fortran_order_becomes_c_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column-major: 1 4 2 5 3 6.
        let f: Vec<u8> = [1u8, 4, 2, 5, 3, 6].to_vec();
        assert_eq!(fortran_to_c(&f, &[2, 3], 1), Some(vec![1, 2, 3, 4, 5, 6]));
        assert_eq!(fortran_to_c(&f, &[2, 4], 1), None);
        assert_eq!(fortran_to_c(&f, &[1 << 62, 4], 1), None);
    }

    #[test]
    fn headers_whose_size_overflows_are_refused() {
        for shape in ["(4611686018427387904, 4)", "(4294967296, 4294967296)"] {
            let h = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
            let err = parse_header(&file(&h)).unwrap_err();
            assert!(err.to_string().contains("too large"), "{shape}: {err}");
        }
    }
}
