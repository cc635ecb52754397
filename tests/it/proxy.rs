//! A TCP proxy on 127.0.0.1 between ferry and a test server: counts the bytes the client
//! sends (request lines, headers and bodies: what a cloud bills as ingress to it) and the
//! bytes it receives (what a cloud bills as egress), and can throttle what the client sends
//! so a test can interrupt a transfer midway.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub struct Proxy {
    pub url: String,
    addr: String,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`), passing at most
    /// `bytes_per_sec` from the client when given.
    pub fn start(upstream: &str, bytes_per_sec: Option<u64>) -> Proxy {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, r, st) = (sent.clone(), received.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (up, down) = (s.clone(), r.clone());
                thread::spawn(move || pipe(client, server, Some((up, bytes_per_sec))));
                thread::spawn(move || pipe(s2, c2, Some((down, None))));
            }
        });
        Proxy {
            url: format!("http://{addr}"),
            addr,
            sent,
            received,
            stop,
        }
    }

    /// Bytes the client sent since the start or the last [`Proxy::reset`].
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Bytes the server sent back since the start or the last [`Proxy::reset`].
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.sent.store(0, Ordering::Relaxed);
        self.received.store(0, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Copies `from` to `to` until either side closes; counts (and paces) when asked.
fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<(Arc<AtomicU64>, Option<u64>)>) {
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((counter, rate)) = &count {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            total += n as u64;
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(total as f64 / *rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
