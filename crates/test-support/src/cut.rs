//! A TCP proxy a test can cut: what a host sees when the network between it and a server goes away
//! (its connections reset, new ones dropped at once), without privileges or network namespaces.
//! Point one process at [`CutProxy::through`] the server's URL and the others straight at it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A proxy on 127.0.0.1 to one server's address.
pub struct CutProxy {
    port: u16,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    cut: AtomicBool,
    stopped: AtomicBool,
    live: Mutex<Vec<TcpStream>>,
}

impl CutProxy {
    /// A proxy to the server a `scheme://user@host:port/...` URL names.
    pub fn to_url(url: &str) -> CutProxy {
        let (host, port) = host_port(url).unwrap_or_else(|| panic!("no host:port in {url}"));
        let target: SocketAddr = format!("{host}:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("{host}:{port} is not an address: {e}"));
        CutProxy::start(target)
    }

    /// A proxy to `target`, accepting at once.
    pub fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let port = listener.local_addr().expect("the proxy's address").port();
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        std::thread::spawn(move || accept(listener, target, serving));
        CutProxy { port, shared }
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn through(&self, url: &str) -> String {
        let (host, port) = host_port(url).unwrap_or_else(|| panic!("no host:port in {url}"));
        url.replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{}", self.port), 1)
    }

    /// Cuts the line: every connection through the proxy is reset, and new ones are dropped.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let live = std::mem::take(&mut *self.shared.live.lock().unwrap_or_else(|p| p.into_inner()));
        for stream in live {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.shared.stopped.store(true, Ordering::SeqCst);
    }
}

fn accept(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.stopped.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => continue,
        };
        if shared.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        let mut live = shared.live.lock().unwrap_or_else(|p| p.into_inner());
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                live.push(clone);
            }
        }
        drop(live);
        pipe(&client, &server);
        pipe(&server, &client);
    }
}

/// Copies `from` into `to` on a thread until either side ends, then ends both.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// The host and port of a URL's authority (`user:pw@host:port`), as written.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = hostport.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}
