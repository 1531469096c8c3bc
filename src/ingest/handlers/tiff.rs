//! AD_TIFF (areaDetector's NDFileTIFF plugin), as area-detector-handlers'
//! `AreaDetectorTiffHandler` reads it: one file per frame, named by the resource's C format
//! `template` applied to (`{root}/{resource_path}/`, `filename`, frame number); datum
//! `point_number` p is frames `[p*fpp, (p+1)*fpp)` with `fpp` the resource's `frame_per_point`
//! (default 1), stacked as `[fpp, y, x]` (or `[y, x]` when the descriptor leaves the axis out
//! and fpp is 1). Every file name goes through the root rule, so a template cannot name a
//! file outside the root.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use serde_json::{Map, Value};
use tiff::decoder::{Decoder, DecodingResult};
use tiff::tags::Tag;

use super::{FrameError, FrameInfo, Handler, Locator, ResourceError};
use crate::ingest::dtype::{Dtype, Kind};
use crate::ingest::rootmap::ResolvedRoot;

pub struct AdTiff {
    root: ResolvedRoot,
    /// `{resource_path}/`, what the template's first `%s` receives (relative to the root).
    folder: String,
    template: String,
    filename: String,
    frame_per_point: u64,
}

impl AdTiff {
    pub fn open(
        root: ResolvedRoot,
        resource_path: &str,
        kwargs: &Map<String, Value>,
    ) -> Result<AdTiff, ResourceError> {
        let bad = |what| ResourceError::Kwargs {
            field: "resource_kwargs",
            kwargs: Value::Object(kwargs.clone()).to_string(),
            what,
        };
        let template = kwargs
            .get("template")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad("AD_TIFF needs `template`, a C format such as \"%s%s_%6.6d.tiff\"")
            })?;
        let filename = kwargs
            .get("filename")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                bad("AD_TIFF needs `filename`, the name the template puts in its second %s")
            })?;
        let frame_per_point = match kwargs.get("frame_per_point") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad("AD_TIFF `frame_per_point` must be a positive integer"))?,
        };
        let folder = if resource_path.is_empty() || resource_path.ends_with('/') {
            resource_path.to_string()
        } else {
            format!("{resource_path}/")
        };
        // The template is checked once, here, with a frame number.
        c_format(template, &folder, filename, 0).map_err(|what| ResourceError::Kwargs {
            field: "resource_kwargs",
            kwargs: Value::Object(kwargs.clone()).to_string(),
            what,
        })?;
        Ok(AdTiff {
            root,
            folder,
            template: template.to_string(),
            filename: filename.to_string(),
            frame_per_point,
        })
    }

    /// The files of the datum's frames, resolved inside the root.
    fn files(&self, at: &Locator) -> Result<Vec<PathBuf>, FrameError> {
        let kwargs = at.kwargs("AD_TIFF frames come from datum documents")?;
        let point = kwargs
            .get("point_number")
            .and_then(Value::as_u64)
            .ok_or_else(|| FrameError::Datum {
                kwargs: Value::Object(kwargs.clone()).to_string(),
                what: "AD_TIFF needs a non-negative integer `point_number`",
            })?;
        let start = point
            .checked_mul(self.frame_per_point)
            .ok_or_else(|| FrameError::Datum {
                kwargs: Value::Object(kwargs.clone()).to_string(),
                what: "AD_TIFF `point_number` times `frame_per_point` overflows",
            })?;
        (start..start + self.frame_per_point)
            .map(|j| {
                let name =
                    c_format(&self.template, &self.folder, &self.filename, j).map_err(|what| {
                        FrameError::Datum {
                            kwargs: Value::Object(kwargs.clone()).to_string(),
                            what,
                        }
                    })?;
                self.root
                    .file(&name)?
                    .map_err(|path| FrameError::Missing { path })
            })
            .collect()
    }
}

/// Python's `template % (path, filename, number)` for the conversions areaDetector templates
/// use: `%s`, `%d`/`%i`/`%u` with flags (`0`, `-`), width and precision, and `%%`.
fn c_format(
    template: &str,
    path: &str,
    filename: &str,
    number: u64,
) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut strings = [path, filename].into_iter();
    let mut numbers = 0;
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut zero, mut left) = (false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '0' => zero = true,
                '-' => left = true,
                _ => break,
            }
            chars.next();
        }
        let mut width = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = width.saturating_mul(10).saturating_add(d as usize).min(64);
            chars.next();
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p.saturating_mul(10).saturating_add(d as usize).min(64);
                chars.next();
            }
            precision = Some(p);
        }
        let body = match chars.next() {
            Some('%') => "%".to_string(),
            Some('s') => strings
                .next()
                .ok_or("AD_TIFF `template` has more than two %s (path, filename)")?
                .to_string(),
            Some('d' | 'i' | 'u') => {
                numbers += 1;
                let digits = number.to_string();
                match precision {
                    Some(p) if digits.len() < p => {
                        format!("{}{digits}", "0".repeat(p - digits.len()))
                    }
                    _ => digits,
                }
            }
            _ => {
                return Err(
                    "AD_TIFF `template` may only use %s, %d (with width, precision, 0 and -) and %%",
                );
            }
        };
        let pad = width.saturating_sub(body.chars().count());
        if left {
            out.push_str(&body);
            out.push_str(&" ".repeat(pad));
        } else if zero && precision.is_none() && body != "%" {
            out.push_str(&"0".repeat(pad));
            out.push_str(&body);
        } else {
            out.push_str(&" ".repeat(pad));
            out.push_str(&body);
        }
    }
    if numbers != 1 {
        return Err("AD_TIFF `template` must hold exactly one %d, the frame number");
    }
    Ok(out)
}

fn tiff_error(path: &std::path::Path, e: impl std::fmt::Display) -> FrameError {
    FrameError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a readable TIFF frame: {e}"),
        ),
    }
}

fn decoder(path: &std::path::Path) -> Result<Decoder<BufReader<File>>, FrameError> {
    let file = File::open(path).map_err(|source| FrameError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Decoder::new(BufReader::new(file)).map_err(|e| tiff_error(path, e))
}

/// The frame's type and shape from the TIFF's tags (one grey channel; areaDetector writes
/// one image per file).
fn header(path: &std::path::Path) -> Result<FrameInfo, FrameError> {
    let mut d = decoder(path)?;
    let (width, height) = d.dimensions().map_err(|e| tiff_error(path, e))?;
    let samples = d.get_tag_u32(Tag::SamplesPerPixel).unwrap_or(1);
    let bits = d.get_tag_u32(Tag::BitsPerSample).unwrap_or(1);
    let format = d.get_tag_u32(Tag::SampleFormat).unwrap_or(1);
    let kind = match format {
        1 => Kind::UInt,
        2 => Kind::Int,
        3 => Kind::Float,
        _ => return Err(tiff_error(path, format!("sample format {format}"))),
    };
    let size = match (kind, bits) {
        (Kind::Float, 32 | 64) | (Kind::UInt | Kind::Int, 8 | 16 | 32 | 64) => bits as usize / 8,
        _ => {
            return Err(tiff_error(
                path,
                format!("{bits}-bit samples of format {format}"),
            ));
        }
    };
    if samples != 1 {
        return Err(tiff_error(
            path,
            format!("{samples} samples per pixel (colour); beamdb stores grey detector frames"),
        ));
    }
    Ok(FrameInfo {
        dtype: Dtype { kind, size },
        shape: vec![height as u64, width as u64],
    })
}

fn pixels(path: &std::path::Path) -> Result<Vec<u8>, FrameError> {
    let mut d = decoder(path)?;
    let image = d.read_image().map_err(|e| tiff_error(path, e))?;
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    Ok(match image {
        DecodingResult::U8(v) => v,
        DecodingResult::I8(v) => le!(v),
        DecodingResult::U16(v) => le!(v),
        DecodingResult::I16(v) => le!(v),
        DecodingResult::U32(v) => le!(v),
        DecodingResult::I32(v) => le!(v),
        DecodingResult::U64(v) => le!(v),
        DecodingResult::I64(v) => le!(v),
        DecodingResult::F32(v) => le!(v),
        DecodingResult::F64(v) => le!(v),
        other => {
            return Err(tiff_error(
                path,
                format!("{:?} samples", std::mem::discriminant(&other)),
            ));
        }
    })
}

impl Handler for AdTiff {
    fn probe(&self, at: &Locator) -> Result<FrameInfo, FrameError> {
        let files = self.files(at)?;
        let first = header(&files[0])?;
        let mut shape = vec![files.len() as u64];
        shape.extend_from_slice(&first.shape);
        Ok(FrameInfo {
            dtype: first.dtype,
            shape,
        })
    }

    fn read(&self, at: &Locator, expected: &FrameInfo) -> Result<Vec<u8>, FrameError> {
        let files = self.files(at)?;
        let total = expected.len_bytes().ok_or_else(|| FrameError::TooLarge {
            path: files.first().cloned().unwrap_or_default(),
            shape: expected.shape.clone(),
        })?;
        let mut out = Vec::with_capacity(total);
        for path in &files {
            let found = header(path)?;
            let mut stacked = vec![files.len() as u64];
            stacked.extend_from_slice(&found.shape);
            let fits =
                stacked == expected.shape || (files.len() == 1 && found.shape == expected.shape);
            if !fits {
                return Err(FrameError::Shape {
                    path: path.clone(),
                    found: stacked,
                    expected: expected.shape.clone(),
                });
            }
            if found.dtype != expected.dtype {
                return Err(FrameError::Dtype {
                    path: path.clone(),
                    found: found.dtype,
                    expected: expected.dtype,
                });
            }
            let bytes = pixels(path)?;
            let want = total / files.len();
            if bytes.len() != want {
                return Err(FrameError::Length {
                    path: path.clone(),
                    found: bytes.len(),
                    expected: want,
                });
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_format_as_python_does() {
        assert_eq!(
            c_format("%s%s_%6.6d.tiff", "a/b/", "scan7", 42).unwrap(),
            "a/b/scan7_000042.tiff"
        );
        assert_eq!(
            c_format("%s%s_%05d.tif", "", "x", 7).unwrap(),
            "x_00007.tif"
        );
        assert_eq!(
            c_format("%s%s_%d.tif", "d/", "x", 123).unwrap(),
            "d/x_123.tif"
        );
        assert_eq!(
            c_format("%s%s_%3d%%.tif", "", "x", 5).unwrap(),
            "x_  5%.tif"
        );
        assert!(c_format("%s%s_%x.tif", "", "x", 5).is_err());
        assert!(c_format("%s%s%s_%d", "", "x", 5).is_err());
        assert!(c_format("%s%s.tif", "", "x", 5).is_err());
    }
}
