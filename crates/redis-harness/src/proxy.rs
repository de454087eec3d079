//! [`LossyProxy`]: a TCP proxy in front of a [`RedisServer`] that loses one answer on purpose.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crate::RedisServer;

/// The patterns of the request whose answer is to be lost, until one is.
type Armed = Arc<Mutex<Option<Vec<Vec<u8>>>>>;

/// A TCP proxy on a free loopback port in front of a Redis server, which loses one answer on
/// purpose: once armed, the first request that contains every one of its patterns is passed to
/// Redis, and when Redis answers, the proxy closes that client's connection instead of passing
/// the answer on. Redis ran the command; the client learns only that its connection was lost (as
/// when a network fails after a request has reached the server, or a client gives up waiting).
/// Everything else passes through unchanged.
///
/// Threads of its own (std only, like the rest of the harness): one accepts, two per connection
/// copy bytes. A request is matched within one read: the proxy is for small requests a client
/// writes at once, as redis-rs does.
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

    /// Loses the answer to the next request that contains all of `patterns`.
    pub fn arm(&self, patterns: &[&str]) {
        let patterns = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(patterns);
    }

    /// How many answers the proxy has lost.
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

/// Copies bytes both ways between `client` and its `server` connection, a thread each way, until
/// either side closes; when the server answers a request the proxy was armed for, closes both.
fn pump(client: TcpStream, server: TcpStream, armed: Armed, lost: Arc<AtomicU64>) {
    let doomed = Arc::new(AtomicBool::new(false));
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else { return };
    let flag = Arc::clone(&doomed);
    thread::spawn(move || {
        let mut buf = vec![0_u8; 1 << 16];
        while let Ok(n @ 1..) = from_client.read(&mut buf) {
            let request = &buf[..n];
            let mut armed = armed.lock().unwrap_or_else(PoisonError::into_inner);
            let hit = armed.as_ref().is_some_and(|patterns| {
                patterns.iter().all(|p| request.windows(p.len()).any(|w| w == p.as_slice()))
            });
            if hit {
                *armed = None;
                flag.store(true, Ordering::SeqCst);
            }
            drop(armed);
            if to_server.write_all(request).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Both);
    });
    let (mut from_server, mut to_client) = (server, client);
    thread::spawn(move || {
        let mut buf = vec![0_u8; 1 << 16];
        while let Ok(n @ 1..) = from_server.read(&mut buf) {
            if doomed.load(Ordering::SeqCst) {
                lost.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(Shutdown::Both);
        let _ = from_server.shutdown(Shutdown::Both);
    });
}
