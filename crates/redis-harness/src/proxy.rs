//! [`LossyProxy`]: a TCP proxy in front of a [`RedisServer`] that loses one answer on purpose.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crate::RedisServer;

/// What the proxy is armed to lose, until it has: the patterns of the request, and whether the
/// request itself is lost (`true`) or only its answer.
type Armed = Arc<Mutex<Option<(Vec<Vec<u8>>, bool)>>>;

/// A TCP proxy on a free loopback port in front of a Redis server, which loses one answer on
/// purpose: once armed, the first request that contains every one of its patterns is passed to
/// Redis, and when Redis answers, the proxy closes that client's connection instead of passing
/// the answer on. Redis ran the command; the client learns only that its connection was lost (as
/// when a network fails after a request has reached the server, or a client gives up waiting).
/// Everything else passes through unchanged.
///
/// Threads of its own (std only, like the rest of the harness): one accepts, two per connection
/// copy requests and replies. It cuts both streams into whole RESP values, so that on a
/// connection several requests share (a multiplexed one), the answer lost is the armed request's
/// own, and every earlier request is answered.
#[derive(Debug)]
pub struct LossyProxy {
    addr: SocketAddr,
    armed: Armed,
    lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl LossyProxy {
    /// A proxy in front of `server`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    #[must_use]
    pub fn start(server: &RedisServer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let upstream = server.addr();
        let (armed, lost, stop): (Armed, _, _) =
            (Arc::default(), Arc::default(), Arc::new(AtomicBool::new(false)));
        let (a, l, s) = (armed.clone(), Arc::clone(&lost), Arc::clone(&stop));
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(&upstream)) else { continue };
                pump(client, server, a.clone(), Arc::clone(&l));
            }
        });
        Self { addr, armed, lost, stop }
    }

    /// The URL a client connects to the server through.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Loses the answer to the next request that contains all of `patterns`: Redis runs the
    /// request, and the client's connection is closed when Redis answers it.
    pub fn arm(&self, patterns: &[&str]) {
        self.set(patterns, false);
    }

    /// Loses the next request that contains all of `patterns` itself: the client's connection
    /// is closed in its place, and Redis never sees it.
    pub fn arm_request(&self, patterns: &[&str]) {
        self.set(patterns, true);
    }

    fn set(&self, patterns: &[&str], request: bool) {
        let patterns = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some((patterns, request));
    }

    /// How many requests or answers the proxy has lost.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LossyProxy {
    /// Stops accepting (a last connection wakes the accepting thread). Connections already made
    /// run on until either side closes them.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies requests and replies between `client` and its `server` connection, a thread each way,
/// until either side closes. Both streams are cut into whole RESP values: the n-th reply answers
/// the n-th request. When a request matches the armed patterns, its reply is not passed on: the
/// proxy closes both connections instead, once Redis has sent it (so Redis has run the request,
/// and every earlier request on the connection got its answer). Armed to lose the request
/// itself, the proxy closes both connections in its place, without passing it on.
fn pump(client: TcpStream, server: TcpStream, armed: Armed, lost: Arc<AtomicU64>) {
    // The 1-based number of the request whose answer is to be lost (0: none).
    let doomed = Arc::new(AtomicU64::new(0));
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else { return };
    let (mark, drop_lost) = (Arc::clone(&doomed), Arc::clone(&lost));
    thread::spawn(move || {
        let mut requests = Values::default();
        let mut buf = vec![0_u8; 1 << 16];
        'copy: while let Ok(n @ 1..) = from_client.read(&mut buf) {
            for request in requests.push(&buf[..n]) {
                let mut armed = armed.lock().unwrap_or_else(PoisonError::into_inner);
                let hit = armed.as_ref().filter(|(patterns, _)| {
                    patterns.iter().all(|p| request.bytes.windows(p.len()).any(|w| w == p.as_slice()))
                });
                if let Some(&(_, lose_request)) = hit {
                    *armed = None;
                    if lose_request {
                        drop_lost.fetch_add(1, Ordering::SeqCst);
                        let _ = from_client.shutdown(Shutdown::Both);
                        break 'copy;
                    }
                    mark.store(request.number, Ordering::SeqCst);
                }
                drop(armed);
                // Forwarded after the mark: its reply cannot come back before the mark is set.
                if to_server.write_all(&request.bytes).is_err() {
                    break 'copy;
                }
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
    });
    let (mut from_server, mut to_client) = (server, client);
    thread::spawn(move || {
        let mut replies = Values::default();
        let mut buf = vec![0_u8; 1 << 16];
        'copy: while let Ok(n @ 1..) = from_server.read(&mut buf) {
            for reply in replies.push(&buf[..n]) {
                if reply.number == doomed.load(Ordering::SeqCst) {
                    lost.fetch_add(1, Ordering::SeqCst);
                    break 'copy;
                }
                if to_client.write_all(&reply.bytes).is_err() {
                    break 'copy;
                }
            }
        }
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = from_server.shutdown(Shutdown::Both);
    });
}

/// A stream of RESP values, cut out of the bytes as they arrive.
#[derive(Default)]
struct Values {
    pending: Vec<u8>,
    count: u64,
}

/// One whole RESP value of a stream, and its 1-based number in it.
struct Value {
    number: u64,
    bytes: Vec<u8>,
}

impl Values {
    /// Takes `bytes` in; returns the values they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<Value> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(len) = value_len(&self.pending) {
            self.count += 1;
            out.push(Value { number: self.count, bytes: self.pending.drain(..len).collect() });
        }
        out
    }
}

/// The length of the RESP value (RESP2 or RESP3) at the start of `buf`, when `buf` holds all of
/// it.
fn value_len(buf: &[u8]) -> Option<usize> {
    let (mut pos, mut left) = (0_usize, 1_usize);
    while left > 0 {
        left -= 1;
        let kind = *buf.get(pos)?;
        let end = pos + 1 + buf.get(pos + 1..)?.windows(2).position(|w| w == b"\r\n")?;
        let head = std::str::from_utf8(&buf[pos + 1..end]).ok();
        pos = end + 2;
        let size = || head.and_then(|h| h.parse::<i64>().ok()).and_then(|n| usize::try_from(n).ok());
        match kind {
            // Blob string, verbatim string, blob error: a length, then that many bytes.
            b'$' | b'=' | b'!' => {
                if let Some(n) = size() {
                    pos += n + 2;
                    if pos > buf.len() {
                        return None;
                    }
                }
            }
            // Array, set, push: that many values; map: twice that.
            b'*' | b'~' | b'>' => left += size().unwrap_or(0),
            b'%' => left += 2 * size().unwrap_or(0),
            // Simple string, error, integer, null, boolean, double, big number: the line alone.
            _ => {}
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::{Values, value_len};

    #[test]
    fn a_value_is_cut_out_only_once_all_of_it_has_come() {
        assert_eq!(value_len(b"+OK\r\n"), Some(5));
        assert_eq!(value_len(b"$3\r\nabc\r\n+OK\r\n"), Some(9));
        assert_eq!(value_len(b"$-1\r\n"), Some(5));
        assert_eq!(value_len(b"*2\r\n$1\r\na\r\n*1\r\n:5\r\n"), Some(19));
        assert_eq!(value_len(b"*-1\r\n"), Some(5));
        assert_eq!(value_len(b"%1\r\n+k\r\n+v\r\n"), Some(12));
        for partial in [&b""[..], b"+O", b"$3\r\nab", b"*2\r\n$1\r\na\r\n"] {
            assert_eq!(value_len(partial), None, "{partial:?}");
        }
    }

    #[test]
    fn values_are_numbered_across_reads() {
        let mut values = Values::default();
        assert!(values.push(b"*1\r\n$4\r\nPI").is_empty());
        let got = values.push(b"NG\r\n+OK\r\n:1");
        assert_eq!(got.iter().map(|v| (v.number, v.bytes.len())).collect::<Vec<_>>(), [(1, 14), (2, 5)]);
        let got = values.push(b"\r\n");
        assert_eq!(got.iter().map(|v| v.number).collect::<Vec<_>>(), [3]);
    }
}
