//! The SUB side of ZeroMQ's wire protocol (ZMTP 3.0, NULL security), as much as subscribing to
//! bluesky's 0MQ proxy needs: greeting, READY handshake, one subscription, then messages.
//!
//! Why not libzmq: the `zmq` crate builds libzmq (C++) from source and the pure-Rust `zeromq`
//! crate brings an async runtime; a subscriber that only reads needs neither. We announce
//! version 3.0, so the proxy's libzmq sends no heartbeats and takes the subscription as a
//! message whose first byte is 1 (RFC 23 and libzmq's compatibility with 3.0 peers).
//!
//! Everything here reads outside bytes: frame sizes are checked against [`MAX_MESSAGE`] before
//! anything is allocated, and an oversized message is skipped, not buffered.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest message kept (all frames together). A bluesky document is kilobytes; an event
/// with an inline image can be megabytes. Bigger messages are skipped and reported.
pub const MAX_MESSAGE: u64 = 256 << 20;

const GREETING_LEN: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FLAG_MORE: u8 = 1;
const FLAG_LONG: u8 = 2;
const FLAG_COMMAND: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    #[error("{addr}: cannot connect: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: connection lost: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr}: the peer closed the connection")]
    Closed { addr: String },
    #[error("{addr}: not a ZeroMQ peer, or one this subscriber cannot talk to: {what}")]
    Protocol { addr: String, what: String },
}

/// What one read brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A whole message: its frames.
    Message(Vec<Vec<u8>>),
    /// A message larger than [`MAX_MESSAGE`] went by, unread; its declared size.
    Oversized(u64),
}

/// Turns bytes from the wire into frames. Pure, so it can be fed hostile input in tests.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Frames of the message being assembled, and their total size.
    frames: Vec<Vec<u8>>,
    size: u64,
    /// Bytes still to drop of an oversized frame, whether more frames follow, and the
    /// message's declared size so far.
    skipping: Option<Skip>,
}

#[derive(Debug)]
struct Skip {
    remaining: u64,
    more: bool,
    size: u64,
}

/// A frame as decoded: command frames are the handshake's (and ignored after it).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Command(Vec<u8>),
    Received(Received),
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if let Some(skip) = &mut self.skipping {
            let drop = skip.remaining.min(bytes.len() as u64);
            skip.remaining -= drop;
            // `drop` is at most bytes.len(), so it fits a usize.
            bytes = &bytes[drop as usize..];
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame or oversized message, `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(mut skip) = self.skipping.take() {
                if skip.remaining > 0 {
                    self.skipping = Some(skip);
                    return None;
                }
                if !skip.more {
                    return Some(Frame::Received(Received::Oversized(skip.size)));
                }
                // More frames follow: read their headers and skip their bodies too.
                let Some((flags, len, header)) = self.header() else {
                    self.skipping = Some(skip);
                    return None;
                };
                self.buf.drain(..header);
                skip.size = skip.size.saturating_add(len);
                skip.more = flags & FLAG_MORE != 0;
                let drop = len.min(self.buf.len() as u64);
                self.buf.drain(..drop as usize);
                skip.remaining = len - drop;
                self.skipping = Some(skip);
                continue;
            }
            let (flags, len, header) = self.header()?;
            // Commands too: a frame of any kind over the limit is dropped as it streams by.
            if self.size.saturating_add(len) > MAX_MESSAGE {
                self.buf.drain(..header);
                let drop = len.min(self.buf.len() as u64);
                self.buf.drain(..drop as usize);
                self.skipping = Some(Skip {
                    remaining: len - drop,
                    more: flags & FLAG_MORE != 0,
                    size: self.size.saturating_add(len),
                });
                self.frames.clear();
                self.size = 0;
                continue;
            }
            // len <= MAX_MESSAGE here, so it fits a usize.
            let end = header + len as usize;
            if self.buf.len() < end {
                return None;
            }
            let body = self.buf[header..end].to_vec();
            self.buf.drain(..end);
            if flags & FLAG_COMMAND != 0 {
                return Some(Frame::Command(body));
            }
            self.size += len;
            self.frames.push(body);
            if flags & FLAG_MORE == 0 {
                self.size = 0;
                return Some(Frame::Received(Received::Message(std::mem::take(
                    &mut self.frames,
                ))));
            }
        }
    }

    /// Flags, body length and header length of the frame at the front, once its header is in.
    fn header(&self) -> Option<(u8, u64, usize)> {
        let flags = *self.buf.first()?;
        if flags & FLAG_LONG != 0 {
            let size: [u8; 8] = self.buf.get(1..9)?.try_into().ok()?;
            Some((flags, u64::from_be_bytes(size), 9))
        } else {
            Some((flags, u64::from(*self.buf.get(1)?), 2))
        }
    }
}

/// Our greeting: signature, version 3.0, mechanism NULL, as-server 0, filler.
fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xff;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// A READY command announcing a SUB socket.
fn ready() -> Vec<u8> {
    let mut body = vec![5];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&3u32.to_be_bytes());
    body.extend_from_slice(b"SUB");
    frame(FLAG_COMMAND, &body)
}

fn frame(flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 9);
    match u8::try_from(body.len()) {
        Ok(len) => {
            out.push(flags);
            out.push(len);
        }
        Err(_) => {
            out.push(flags | FLAG_LONG);
            out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(body);
    out
}

/// A connected, subscribed SUB socket.
pub struct Subscriber {
    stream: TcpStream,
    addr: String,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Subscriber {
    /// Connects to `addr` (`host:port`), shakes hands and subscribes to messages that start
    /// with `topic`. `tick` bounds how long [`Subscriber::recv`] blocks.
    pub fn connect(addr: &str, topic: &[u8], tick: Duration) -> Result<Subscriber, ZmtpError> {
        let connect = |source| ZmtpError::Connect {
            addr: addr.to_string(),
            source,
        };
        // Bounded: an unreachable host must not hold off SIGTERM for the kernel's SYN retries.
        let mut last = None;
        let mut stream = None;
        for sa in addr.to_socket_addrs().map_err(connect)? {
            match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| {
            connect(last.unwrap_or_else(|| {
                std::io::Error::new(ErrorKind::NotFound, "the name resolves to no address")
            }))
        })?;
        // The handshake itself must not hang on a peer that accepts and says nothing.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(connect)?;
        let mut sub = Subscriber {
            stream,
            addr: addr.to_string(),
            decoder: Decoder::default(),
            buf: vec![0; 64 << 10],
        };
        sub.handshake(topic)?;
        sub.stream
            .set_read_timeout(Some(tick))
            .map_err(|source| sub.io(source))?;
        Ok(sub)
    }

    fn io(&self, source: std::io::Error) -> ZmtpError {
        ZmtpError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    fn protocol(&self, what: impl Into<String>) -> ZmtpError {
        ZmtpError::Protocol {
            addr: self.addr.clone(),
            what: what.into(),
        }
    }

    fn handshake(&mut self, topic: &[u8]) -> Result<(), ZmtpError> {
        self.stream.write_all(&greeting()).map_err(|e| self.io(e))?;
        let mut theirs = [0u8; GREETING_LEN];
        self.stream
            .read_exact(&mut theirs)
            .map_err(|e| self.io(e))?;
        if theirs[0] != 0xff || theirs[9] & 1 != 1 {
            return Err(self.protocol("its greeting has no ZMTP signature"));
        }
        if theirs[10] < 3 {
            return Err(self.protocol(format!(
                "it speaks ZMTP {}.{}; 3.0 or later is needed (libzmq 4 or later)",
                theirs[10], theirs[11]
            )));
        }
        if &theirs[12..16] != b"NULL" || theirs[16..32].iter().any(|&b| b != 0) {
            return Err(self.protocol(
                "it asks for a security mechanism (CURVE?); beamdb listen speaks only NULL: point it at a proxy output without CURVE",
            ));
        }
        self.stream.write_all(&ready()).map_err(|e| self.io(e))?;
        loop {
            match self.decoder.next_frame() {
                Some(Frame::Command(body)) => {
                    if body.get(1..6) == Some(b"READY") && body.first() == Some(&5) {
                        break;
                    }
                    if body.get(1..6) == Some(b"ERROR") && body.first() == Some(&5) {
                        let reason = body.get(7..).unwrap_or_default();
                        return Err(self.protocol(format!(
                            "it refused the handshake: {}",
                            String::from_utf8_lossy(reason).escape_debug()
                        )));
                    }
                }
                Some(Frame::Received(_)) => {
                    return Err(self.protocol("it sent a message before READY"));
                }
                None => self.fill()?,
            }
        }
        let mut subscribe = vec![1];
        subscribe.extend_from_slice(topic);
        self.stream
            .write_all(&frame(0, &subscribe))
            .map_err(|e| self.io(e))
    }

    /// Reads what the socket has into the decoder; a timeout is not an error here.
    fn fill(&mut self) -> Result<(), ZmtpError> {
        match self.stream.read(&mut self.buf) {
            Ok(0) => Err(ZmtpError::Closed {
                addr: self.addr.clone(),
            }),
            Ok(n) => {
                self.decoder.push(&self.buf[..n]);
                Ok(())
            }
            Err(e) => Err(self.io(e)),
        }
    }

    /// The next message, or `None` when nothing came within the tick.
    pub fn recv(&mut self) -> Result<Option<Received>, ZmtpError> {
        loop {
            match self.decoder.next_frame() {
                Some(Frame::Received(r)) => return Ok(Some(r)),
                // Commands after the handshake (none from a 3.0 peer) carry nothing for us.
                Some(Frame::Command(_)) => continue,
                None => {}
            }
            match self.fill() {
                Ok(()) => {}
                Err(ZmtpError::Io { source, .. })
                    if matches!(
                        source.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], step: usize) -> Vec<Frame> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            d.push(chunk);
            while let Some(f) = d.next_frame() {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let mut wire = frame(FLAG_MORE, b"first");
        wire.extend(frame(0, &vec![7u8; 300]));
        wire.extend(frame(FLAG_COMMAND, b"\x04PING"));
        wire.extend(frame(0, b""));
        for step in [1, 2, 3, 7, 64, 10_000] {
            let got = decode_all(&wire, step);
            assert_eq!(
                got,
                vec![
                    Frame::Received(Received::Message(vec![b"first".to_vec(), vec![7; 300]])),
                    Frame::Command(b"\x04PING".to_vec()),
                    Frame::Received(Received::Message(vec![Vec::new()])),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_huge_declared_size_is_skipped_not_allocated() {
        // Declares 2^63 bytes: nothing is allocated for it, its bytes are dropped as they come.
        let mut wire = vec![FLAG_LONG];
        wire.extend_from_slice(&(1u64 << 63).to_be_bytes());
        wire.extend_from_slice(&[0; 100]);
        let got = decode_all(&wire, 13);
        assert!(got.is_empty());
        // The same for a command frame (this once looped for ever, found by the proptest).
        let mut wire = vec![FLAG_LONG | FLAG_COMMAND];
        wire.extend_from_slice(&(MAX_MESSAGE + 1).to_be_bytes());
        let got = decode_all(&wire, 5);
        assert!(got.is_empty());
    }

    #[test]
    fn an_oversized_message_is_reported_and_the_next_one_decodes() {
        let big = MAX_MESSAGE + 1;
        let mut d = Decoder::default();
        let mut header = vec![FLAG_LONG | FLAG_MORE];
        header.extend_from_slice(&big.to_be_bytes());
        d.push(&header);
        let chunk = vec![0u8; 1 << 20];
        let mut left = big;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            d.push(&chunk[..n]);
            left -= n as u64;
            assert_eq!(d.next_frame(), None);
        }
        d.push(&frame(0, b"tail"));
        assert_eq!(
            d.next_frame(),
            Some(Frame::Received(Received::Oversized(big + 4)))
        );
        d.push(&frame(0, b"next"));
        assert_eq!(
            d.next_frame(),
            Some(Frame::Received(Received::Message(vec![b"next".to_vec()])))
        );
    }

    proptest::proptest! {
        /// Whatever the peer sends, in whatever pieces: no panic, and what the decoder holds
        /// stays within one maximal message plus one read.
        #[test]
        fn any_bytes_decode_without_panic_or_unbounded_buffering(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            step in 1usize..300,
        ) {
            let mut d = Decoder::default();
            for chunk in bytes.chunks(step) {
                d.push(chunk);
                while d.next_frame().is_some() {}
                proptest::prop_assert!(d.buf.len() as u64 <= MAX_MESSAGE + 9 + step as u64);
            }
        }

        #[test]
        fn any_message_parses_to_a_document_or_an_error(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let _ = super::super::wire::parse(std::slice::from_ref(&bytes), b"");
            let mut framed = b" event ".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = super::super::wire::parse(&[framed], b"");
        }
    }

    #[test]
    fn greeting_and_ready_are_what_rfc_23_says() {
        let g = greeting();
        assert_eq!(g.len(), 64);
        assert_eq!((g[0], g[9], g[10], g[11]), (0xff, 0x7f, 3, 0));
        assert_eq!(&g[12..16], b"NULL");
        let r = ready();
        assert_eq!(r[0], FLAG_COMMAND);
        assert_eq!(r[1] as usize, r.len() - 2);
        assert_eq!(&r[2..8], b"\x05READY");
    }
}
