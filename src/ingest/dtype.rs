//! Element types of frames, spelled the numpy way (`<u2`), because that is how `.npy` headers
//! and descriptors (`dtype_numpy`) name them and how `image_refs.dtype` records them.
//!
//! Frames are stored little-endian whatever the source's byte order: zarr-python reads the
//! values, not the bytes, so a big-endian source is byte-swapped on the way in.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Bool,
    Int,
    UInt,
    Float,
}

/// An element type: kind and size in bytes. Always little-endian once stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dtype {
    pub kind: Kind,
    pub size: usize,
}

/// A numpy dtype string that beamdb cannot store, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported dtype {0:?}: beamdb stores bool, int8-64, uint8-64 and float16-64")]
pub struct DtypeError(pub String);

impl Dtype {
    pub const FLOAT64: Dtype = Dtype {
        kind: Kind::Float,
        size: 8,
    };

    /// Parses a numpy type string (`<u2`, `|u1`, `>f8`, `u2`) into the type and whether the
    /// source bytes are big-endian.
    pub fn parse_numpy(s: &str) -> Result<(Dtype, bool), DtypeError> {
        let bad = || DtypeError(s.to_string());
        let (big, rest) = match s.as_bytes().first() {
            Some(b'<' | b'|' | b'=') => (false, &s[1..]),
            Some(b'>') => (true, &s[1..]),
            _ => (false, s),
        };
        let mut chars = rest.chars();
        let kind = match chars.next() {
            Some('b') => Kind::Bool,
            Some('i') => Kind::Int,
            Some('u') => Kind::UInt,
            Some('f') => Kind::Float,
            _ => return Err(bad()),
        };
        let size: usize = chars.as_str().parse().map_err(|_| bad())?;
        let ok = match kind {
            Kind::Bool => size == 1,
            Kind::Int | Kind::UInt => matches!(size, 1 | 2 | 4 | 8),
            Kind::Float => matches!(size, 2 | 4 | 8),
        };
        if !ok {
            return Err(bad());
        }
        // One-byte types have no byte order.
        Ok((Dtype { kind, size }, big && size > 1))
    }

    /// The bytes of one frame of `shape` in this type, or `None` when the numbers overflow or
    /// exceed what one allocation can hold. The one place frame sizes are computed: every
    /// shape comes from a document or a file header, and a wrapped product once let an empty
    /// payload "match" a frame of 2^64 elements.
    pub fn frame_bytes(self, shape: &[u64]) -> Option<usize> {
        let bytes = shape
            .iter()
            .try_fold(self.size as u64, |n, &d| n.checked_mul(d))?;
        // A Vec cannot be longer than isize::MAX bytes.
        usize::try_from(bytes)
            .ok()
            .filter(|&n| isize::try_from(n).is_ok())
    }

    /// The type a zarr v3 data type name stands for (the inverse of [`Dtype::zarr_name`]).
    pub fn from_zarr_name(name: &str) -> Option<Dtype> {
        let (kind, sizes): (Kind, &[usize]) = match name.trim_end_matches(char::is_numeric) {
            "bool" => (Kind::Bool, &[1]),
            "int" => (Kind::Int, &[1, 2, 4, 8]),
            "uint" => (Kind::UInt, &[1, 2, 4, 8]),
            "float" => (Kind::Float, &[2, 4, 8]),
            _ => return None,
        };
        sizes
            .iter()
            .map(|&size| Dtype { kind, size })
            .find(|d| d.zarr_name() == name)
    }

    /// The zarr v3 data type name.
    pub fn zarr_name(self) -> &'static str {
        match (self.kind, self.size) {
            (Kind::Bool, _) => "bool",
            (Kind::Int, 1) => "int8",
            (Kind::Int, 2) => "int16",
            (Kind::Int, 4) => "int32",
            (Kind::Int, _) => "int64",
            (Kind::UInt, 1) => "uint8",
            (Kind::UInt, 2) => "uint16",
            (Kind::UInt, 4) => "uint32",
            (Kind::UInt, _) => "uint64",
            (Kind::Float, 2) => "float16",
            (Kind::Float, 4) => "float32",
            (Kind::Float, _) => "float64",
        }
    }
}

/// The numpy spelling as stored: `<u2`, `|u1`, `|b1`.
impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Bool => 'b',
            Kind::Int => 'i',
            Kind::UInt => 'u',
            Kind::Float => 'f',
        };
        let order = if self.size == 1 { '|' } else { '<' };
        write!(f, "{order}{kind}{}", self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zarr_names_round_trip() {
        for s in [
            "|b1", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "<f2", "<f4", "<f8",
        ] {
            let (d, _) = Dtype::parse_numpy(s).unwrap();
            assert_eq!(Dtype::from_zarr_name(d.zarr_name()), Some(d), "{s}");
        }
        assert_eq!(Dtype::from_zarr_name("complex64"), None);
        assert_eq!(Dtype::from_zarr_name("int3"), None);
    }

    #[test]
    fn numpy_strings_round_trip() {
        for (s, shown, big) in [
            ("<u2", "<u2", false),
            ("|u1", "|u1", false),
            (">f8", "<f8", true),
            ("i4", "<i4", false),
            ("|b1", "|b1", false),
            (">u1", "|u1", false),
        ] {
            let (d, b) = Dtype::parse_numpy(s).unwrap();
            assert_eq!((d.to_string().as_str(), b), (shown, big), "{s}");
        }
        for bad in ["<c16", "<U10", "<u3", "O", "", "<f1", "|V8"] {
            assert!(Dtype::parse_numpy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frame_sizes_never_wrap() {
        let (u2, _) = Dtype::parse_numpy("<u2").unwrap();
        assert_eq!(u2.frame_bytes(&[64, 64]), Some(8192));
        assert_eq!(u2.frame_bytes(&[]), Some(2));
        assert_eq!(u2.frame_bytes(&[0, 64]), Some(0));
        let (u1, _) = Dtype::parse_numpy("|u1").unwrap();
        assert_eq!(u1.frame_bytes(&[1 << 62, 4]), None);
        assert_eq!(u1.frame_bytes(&[1 << 32, 1 << 32]), None);
        assert_eq!(u1.frame_bytes(&[1 << 63]), None);
        assert_eq!(
            Dtype::FLOAT64.frame_bytes(&[1 << 20, 1 << 20]),
            Some(8 << 40)
        );
    }
}
