//! The compression filters detectors write that libhdf5 does not decode by itself, decoded in
//! this process so that no plugin has to be installed by hand: bitshuffle (32008, with LZ4,
//! Zstandard or no compression after the bit transpose; the DECTRIS Eiger's), LZ4 (32004) and
//! Zstandard (32015), and Blosc (32001, every inner codec, c-blosc built by blosc-src). Each is
//! registered with `H5Zregister` as a decode-only filter, once, before the first file is
//! opened. (hdf5-metno's `blosc-all` feature registers a Blosc filter too; beamdb's replaces
//! it, because that one hands c-blosc a chunk without checking the chunk's header against its
//! length, and a lying header makes c-blosc read past the chunk.)
//!
//! The decoders take the bytes of one chunk as the file has them; every length in them is
//! checked against the input before it is used, and a bad chunk is an error (the callback
//! returns 0, which libhdf5 reports as a failed read), never a panic across the C boundary.

use std::cell::RefCell;
use std::ffi::{c_uint, c_void};
use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use hdf5_sys::h5z::{H5Z_CLASS_T_VERS, H5Z_FLAG_REVERSE, H5Z_class2_t, H5Z_filter_t, H5Zregister};

pub const BITSHUFFLE: H5Z_filter_t = 32008;
pub const LZ4: H5Z_filter_t = 32004;
pub const ZSTD: H5Z_filter_t = 32015;
pub const BLOSC: H5Z_filter_t = 32001;

/// The largest chunk libhdf5 can hold (its chunk sizes are 32-bit): a header that promises more
/// is lying, and is refused before anything is allocated.
const MAX_CHUNK: u64 = u32::MAX as u64;

/// The name of a filter id, for messages: the registered ones of the HDF Group's list that
/// beamlines meet.
pub fn name(id: H5Z_filter_t) -> &'static str {
    match id {
        1 => "deflate",
        2 => "shuffle",
        3 => "fletcher32",
        4 => "szip",
        5 => "nbit",
        6 => "scaleoffset",
        305 => "LZO",
        307 => "bzip2",
        32000 => "LZF",
        BLOSC => "Blosc",
        32002 => "MAFISC",
        32003 => "Snappy",
        LZ4 => "LZ4",
        32005 => "APAX",
        32006 => "CBF",
        32007 => "JPEG-XR",
        BITSHUFFLE => "bitshuffle",
        32009 => "SPDP",
        32010 => "LPC-Rice",
        32011 => "CCSDS-123",
        32012 => "JPEG-LS",
        32013 => "zfp",
        32014 => "fpzip",
        ZSTD => "Zstandard",
        32016 => "B3D",
        32017 => "SZ",
        32018 => "FCIDECOMP",
        32019 => "JPEG",
        32020 => "VBZ",
        32022 => "SZ3",
        32023 => "Delta-Rice",
        32024 => "BLOSC2",
        32026 => "Blosc2",
        _ => "unregistered filter",
    }
}

thread_local! {
    /// Why the last decode on this thread failed (the C callback can only return 0); the
    /// reader adds it to libhdf5's "filter returned failure".
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The reason the last in-process decode on this thread failed, if one did.
pub fn take_last_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

/// Registers the decoders with libhdf5, once per process. Must run before a file is opened.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // hdf5-metno registers Blosc when its library lock is first taken.
        hdf5::sync::sync(|| {
            for (id, name, filter) in [
                (
                    BITSHUFFLE,
                    c"bitshuffle (beamdb, decode only)",
                    bitshuffle_cb as Callback,
                ),
                (LZ4, c"lz4 (beamdb, decode only)", lz4_cb as Callback),
                (ZSTD, c"zstd (beamdb, decode only)", zstd_cb as Callback),
                (BLOSC, c"blosc (beamdb, decode only)", blosc_cb as Callback),
            ] {
                let class = H5Z_class2_t {
                    version: H5Z_CLASS_T_VERS as _,
                    id,
                    encoder_present: 0,
                    decoder_present: 1,
                    name: name.as_ptr(),
                    can_apply: None,
                    set_local: None,
                    filter: Some(filter),
                };
                // SAFETY: libhdf5 copies the class; the name is 'static.
                let status = unsafe { H5Zregister((&raw const class).cast()) };
                if status < 0 {
                    // Reported where it matters: the filter check at open names the filter
                    // as unavailable.
                    tracing::warn!("could not register the {name:?} HDF5 filter");
                }
            }
        });
    });
}

type Callback = unsafe extern "C" fn(
    c_uint,
    usize,
    *const c_uint,
    usize,
    *mut usize,
    *mut *mut c_void,
) -> usize;

/// A decode error: what was wrong with the chunk.
#[derive(Debug)]
struct DecodeError(pub String);

fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError(what.into())
}

/// The output buffer of a decode, allocated with the C allocator because libhdf5 frees it.
struct CBuf {
    ptr: *mut u8,
    len: usize,
}

impl CBuf {
    fn zeroed(len: u64) -> Result<CBuf, DecodeError> {
        if len > MAX_CHUNK {
            return Err(bad(format!(
                "the chunk says it holds {len} bytes, more than an HDF5 chunk can"
            )));
        }
        let len = len as usize;
        // SAFETY: calloc with a checked size; null is handled.
        let ptr = unsafe { libc::calloc(len.max(1), 1) }.cast::<u8>();
        if ptr.is_null() {
            return Err(bad(format!("cannot allocate {len} bytes for the chunk")));
        }
        Ok(CBuf { ptr, len })
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live, zeroed allocation of len bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Hands the buffer to libhdf5.
    fn into_raw(self) -> (*mut u8, usize) {
        let out = (self.ptr, self.len);
        std::mem::forget(self);
        out
    }
}

impl Drop for CBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by calloc in `zeroed`, not handed out.
        unsafe { libc::free(self.ptr.cast()) }
    }
}

/// The shared body of the three callbacks: decode `(*buf)[..nbytes]` with `decode`, then
/// replace libhdf5's buffer with the result. Returns the decoded length, or 0 on any failure
/// (encoding is not offered, so a write asks for it in vain and fails the same way).
///
/// # Safety
/// Called by libhdf5 with its own arguments: `*buf` holds at least `nbytes` bytes and was
/// allocated with the C allocator; `cd_values` holds `cd_nelmts` values.
unsafe fn run_filter(
    flags: c_uint,
    cd_nelmts: usize,
    cd_values: *const c_uint,
    nbytes: usize,
    buf_size: *mut usize,
    buf: *mut *mut c_void,
    decode: fn(&[c_uint], &[u8]) -> Result<CBuf, DecodeError>,
) -> usize {
    if flags & H5Z_FLAG_REVERSE == 0 || buf.is_null() || buf_size.is_null() {
        return 0;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller's contract above.
        let params = if cd_values.is_null() || cd_nelmts == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(cd_values, cd_nelmts) }
        };
        let input = unsafe { std::slice::from_raw_parts((*buf).cast::<u8>(), nbytes) };
        decode(params, input)
    }));
    match outcome {
        Ok(Ok(out)) => {
            let (ptr, len) = out.into_raw();
            // SAFETY: libhdf5 owns *buf and expects it replaced by a C allocation.
            unsafe {
                libc::free(*buf);
                *buf = ptr.cast();
                *buf_size = len.max(1);
            }
            len
        }
        Ok(Err(DecodeError(what))) => {
            LAST_ERROR.with(|e| *e.borrow_mut() = Some(what));
            0
        }
        Err(_) => {
            LAST_ERROR.with(|e| *e.borrow_mut() = Some("the decoder failed unexpectedly".into()));
            0
        }
    }
}

/// The `H5Z_func_t` libhdf5 calls for one of beamdb's decode filters: the four differ only in
/// the decoder [`run_filter`] runs.
macro_rules! filter_callback {
    ($name:ident, $decode:expr) => {
        unsafe extern "C" fn $name(
            flags: c_uint,
            cd_nelmts: usize,
            cd_values: *const c_uint,
            nbytes: usize,
            buf_size: *mut usize,
            buf: *mut *mut c_void,
        ) -> usize {
            // SAFETY: forwarded from libhdf5.
            unsafe { run_filter(flags, cd_nelmts, cd_values, nbytes, buf_size, buf, $decode) }
        }
    };
}

filter_callback!(bitshuffle_cb, decode_bitshuffle);
filter_callback!(lz4_cb, |_, i| decode_lz4(i));
filter_callback!(zstd_cb, |_, i| decode_zstd(i));
filter_callback!(blosc_cb, |_, i| decode_blosc(i));

/// A Blosc chunk: its header (checked against the chunk's length by c-blosc's own
/// `blosc_cbuffer_validate` before anything is decoded) says its decoded size.
fn decode_blosc(input: &[u8]) -> Result<CBuf, DecodeError> {
    let mut decoded: usize = 0;
    // SAFETY: the pointer and length are the chunk's; validate reads only the header, within
    // `input.len()` bytes.
    let valid = unsafe {
        blosc_src::blosc_cbuffer_validate(input.as_ptr().cast(), input.len(), &mut decoded)
    };
    if input.len() < 16 || valid < 0 {
        return Err(bad("the Blosc header does not match the chunk"));
    }
    let mut out = CBuf::zeroed(decoded as u64)?;
    let dst = out.as_mut();
    // SAFETY: the header was validated against the input's length; c-blosc writes at most
    // `dst.len()` bytes; one internal thread, no global state (libhdf5's lock serialises us).
    let got = unsafe {
        blosc_src::blosc_decompress_ctx(
            input.as_ptr().cast(),
            dst.as_mut_ptr().cast(),
            dst.len(),
            1,
        )
    };
    if got < 0 || got as usize != decoded {
        return Err(bad(format!("Blosc decoded {got} bytes, not {decoded}")));
    }
    Ok(out)
}

fn be32(input: &[u8], at: usize) -> Result<u32, DecodeError> {
    input
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| {
            bad(format!(
                "the chunk ends at byte {} inside a header",
                input.len()
            ))
        })
}

fn be64(input: &[u8], at: usize) -> Result<u64, DecodeError> {
    let hi = be32(input, at)? as u64;
    let lo = be32(input, at + 4)? as u64;
    Ok(hi << 32 | lo)
}

/// bitshuffle's compression codes in its filter parameters (cd_values[4]).
const BSHUF_NONE: c_uint = 0;
const BSHUF_LZ4: c_uint = 2;
const BSHUF_ZSTD: c_uint = 3;

/// The bitshuffle filter. Parameters: [major, minor, element size, block size (elements, 0 =
/// default), compression]. Compressed chunks start with the total size (8 bytes, big-endian)
/// and the block size in bytes (4 bytes); then each block is a 4-byte big-endian length and
/// that many bytes of LZ4 (or Zstandard) holding the bit-transposed block. Elements past the
/// last multiple of 8 are stored as they are, after the blocks.
fn decode_bitshuffle(params: &[c_uint], input: &[u8]) -> Result<CBuf, DecodeError> {
    let elem = *params
        .get(2)
        .filter(|&&e| e > 0)
        .ok_or_else(|| bad("bitshuffle parameters carry no element size"))? as usize;
    let compression = params.get(4).copied().unwrap_or(BSHUF_NONE);
    let (total, block_elems, body) = match compression {
        BSHUF_LZ4 | BSHUF_ZSTD => {
            let total = be64(input, 0)?;
            let block_bytes = be32(input, 8)? as usize;
            if block_bytes == 0
                || !block_bytes.is_multiple_of(elem)
                || !(block_bytes / elem).is_multiple_of(8)
            {
                return Err(bad(format!(
                    "bitshuffle block of {block_bytes} bytes is not a multiple of 8 elements of {elem} bytes"
                )));
            }
            (total, block_bytes / elem, &input[12..])
        }
        BSHUF_NONE => {
            let given = params.get(3).copied().unwrap_or(0) as usize;
            let block = if given == 0 {
                default_block(elem)
            } else {
                given
            };
            if block % 8 != 0 {
                return Err(bad(format!(
                    "bitshuffle block of {block} elements is not a multiple of 8"
                )));
            }
            (input.len() as u64, block, input)
        }
        other => return Err(bad(format!("bitshuffle compression {other} is not known"))),
    };
    if total % elem as u64 != 0 {
        return Err(bad(format!(
            "{total} bytes is not a whole number of {elem}-byte elements"
        )));
    }
    let mut out = CBuf::zeroed(total)?;
    let n = total as usize / elem;
    let mut scratch = vec![0u8; block_elems * elem];
    let mut at = 0usize; // read position in body
    let mut done = 0usize; // elements written
    let whole = n - n % 8;
    let dst = out.as_mut();
    while done < whole {
        let count = block_elems.min(whole - done);
        let bytes = count * elem;
        let block = &mut scratch[..bytes];
        match compression {
            BSHUF_NONE => {
                let src = body
                    .get(at..at + bytes)
                    .ok_or_else(|| bad("the chunk is shorter than its elements"))?;
                block.copy_from_slice(src);
                at += bytes;
            }
            _ => {
                let len = be32(body, at)? as usize;
                let src = body
                    .get(at + 4..at + 4 + len)
                    .ok_or_else(|| bad("a bitshuffle block runs past the end of the chunk"))?;
                at += 4 + len;
                let got = if compression == BSHUF_LZ4 {
                    lz4_flex::block::decompress_into(src, block)
                        .map_err(|e| bad(format!("LZ4 block: {e}")))?
                } else {
                    zstd::bulk::decompress_to_buffer(src, &mut *block)
                        .map_err(|e| bad(format!("Zstandard block: {e}")))?
                };
                if got != bytes {
                    return Err(bad(format!("a block decoded to {got} bytes, not {bytes}")));
                }
            }
        }
        bitunshuffle(block, &mut dst[done * elem..(done + count) * elem], elem);
        done += count;
    }
    let tail = (n - whole) * elem;
    let src = body
        .get(at..at + tail)
        .ok_or_else(|| bad("the chunk is shorter than its last elements"))?;
    dst[whole * elem..].copy_from_slice(src);
    Ok(out)
}

/// bitshuffle's default block: about 8 KiB of elements, a multiple of 8, at least 128.
fn default_block(elem: usize) -> usize {
    ((8192 / elem) / 8 * 8).max(128)
}

/// Transposes the 8x8 bit matrix held in `x` (byte r is row r, bit c column c).
#[inline]
fn transpose8(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^= t ^ (t << 28);
    x
}

/// Undoes bitshuffle's transpose of one block of `n` elements (`n` a multiple of 8): in `src`,
/// byte `g` of bit-row `(j, k)` (at `(8j + k) * n/8 + g`) holds bit `k` of byte `j` of the
/// elements `8g .. 8g+8`, lowest bit first.
fn bitunshuffle(src: &[u8], dst: &mut [u8], elem: usize) {
    let n = src.len() / elem;
    let row = n / 8;
    if row == 0 {
        return;
    }
    // The 8 * elem bit-rows, each `row` bytes; output written 8 elements at a time, so each
    // output chunk is finished while it is in cache.
    let rows: Vec<&[u8]> = src.chunks_exact(row).collect();
    for (g, out) in dst.chunks_exact_mut(8 * elem).enumerate() {
        for (j, bits) in rows.chunks_exact(8).enumerate() {
            let mut x = 0u64;
            for (k, bit_row) in bits.iter().enumerate() {
                x |= (bit_row[g] as u64) << (8 * k);
            }
            for (b, byte) in transpose8(x).to_le_bytes().into_iter().enumerate() {
                out[b * elem + j] = byte;
            }
        }
    }
}

/// The HDF5 LZ4 filter: total size (8 bytes, big-endian), block size (4 bytes), then per block
/// a 4-byte big-endian length and the LZ4 block, or the block as it is when the length equals
/// the block's size.
fn decode_lz4(input: &[u8]) -> Result<CBuf, DecodeError> {
    let total = be64(input, 0)?;
    let block = be32(input, 8)? as u64;
    let mut out = CBuf::zeroed(total)?;
    let block = if block == 0 || block > total {
        total
    } else {
        block
    } as usize;
    let dst = out.as_mut();
    let mut at = 12usize;
    let mut done = 0usize;
    while done < dst.len() {
        let size = block.min(dst.len() - done);
        let len = be32(input, at)? as usize;
        let src = input
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| bad("an LZ4 block runs past the end of the chunk"))?;
        at += 4 + len;
        let target = &mut dst[done..done + size];
        if len == size {
            target.copy_from_slice(src);
        } else {
            let got = lz4_flex::block::decompress_into(src, target)
                .map_err(|e| bad(format!("LZ4 block: {e}")))?;
            if got != size {
                return Err(bad(format!(
                    "an LZ4 block decoded to {got} bytes, not {size}"
                )));
            }
        }
        done += size;
    }
    Ok(out)
}

/// The HDF5 Zstandard filter: the chunk is one Zstandard frame.
fn decode_zstd(input: &[u8]) -> Result<CBuf, DecodeError> {
    let mut decoder =
        zstd::stream::read::Decoder::new(input).map_err(|e| bad(format!("Zstandard: {e}")))?;
    let mut data = Vec::new();
    (&mut decoder)
        .take(MAX_CHUNK + 1)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("Zstandard: {e}")))?;
    let mut out = CBuf::zeroed(data.len() as u64)?;
    out.as_mut().copy_from_slice(&data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitshuffle's transpose, written the obvious way (bit by bit), to check the fast one.
    fn bitshuffle_slow(src: &[u8], elem: usize) -> Vec<u8> {
        let n = src.len() / elem;
        let mut out = vec![0u8; src.len()];
        for i in 0..n {
            for j in 0..elem {
                for k in 0..8 {
                    let bit = (src[i * elem + j] >> k) & 1;
                    let row = 8 * j + k;
                    out[row * (n / 8) + i / 8] |= bit << (i % 8);
                }
            }
        }
        out
    }

    #[test]
    fn bitunshuffle_inverts_the_transpose() {
        for elem in [1, 2, 4, 8] {
            let n = 64;
            let src: Vec<u8> = (0..n * elem).map(|i| (i * 37 + i / 3) as u8).collect();
            let shuffled = bitshuffle_slow(&src, elem);
            let mut back = vec![0u8; src.len()];
            bitunshuffle(&shuffled, &mut back, elem);
            assert_eq!(back, src, "elem {elem}");
        }
    }

    #[test]
    fn lying_headers_are_errors_not_crashes() {
        // Total size far past any chunk; truncated blocks; garbage LZ4.
        let mut huge = (u64::MAX).to_be_bytes().to_vec();
        huge.extend(8192u32.to_be_bytes());
        assert!(decode_lz4(&huge).is_err());
        assert!(decode_bitshuffle(&[0, 0, 2, 0, 2], &huge).is_err());
        let mut short = 64u64.to_be_bytes().to_vec();
        short.extend(64u32.to_be_bytes());
        short.extend(1000u32.to_be_bytes());
        short.extend([1, 2, 3]);
        assert!(decode_lz4(&short).is_err());
        assert!(decode_bitshuffle(&[0, 0, 2, 0, 2], &short).is_err());
        let mut garbage = 64u64.to_be_bytes().to_vec();
        garbage.extend(64u32.to_be_bytes());
        garbage.extend(10u32.to_be_bytes());
        garbage.extend([0xff; 10]);
        assert!(decode_lz4(&garbage).is_err());
        assert!(decode_bitshuffle(&[0, 0, 2, 0, 2], &garbage).is_err());
        assert!(decode_bitshuffle(&[0, 0, 0], &[1, 2, 3]).is_err());
        assert!(decode_zstd(b"not zstd").is_err());
        assert!(decode_lz4(&[1, 2]).is_err());
        // A Blosc header that promises more compressed bytes than the chunk has.
        let mut blosc = vec![2u8, 1, 1, 2];
        blosc.extend(64u32.to_le_bytes()); // nbytes
        blosc.extend(64u32.to_le_bytes()); // blocksize
        blosc.extend(1000u32.to_le_bytes()); // cbytes: past the end
        blosc.extend([0u8; 8]);
        assert!(decode_blosc(&blosc).is_err());
        assert!(decode_blosc(&[1, 2, 3]).is_err());
    }
}
