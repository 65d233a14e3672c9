//! A wide-area link on loopback: a TCP proxy that delays every chunk it forwards by a one-way delay
//! plus jitter, can stall a chunk, reset connections, or take the link down — for tests and
//! benchmarks of signer nodes, the root and RPC endpoints "in other regions" (the kernel here has
//! no netem).
//!
//! Order is kept within each direction of a connection (a chunk is never delivered before the one
//! read before it), as TCP would; jitter therefore delays, it never reorders.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How a link behaves, per direction of each connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkProfile {
    /// Delay added to every chunk, each way (half the round-trip time).
    pub one_way: Duration,
    /// Extra delay, uniform in `[0, jitter]`, per chunk.
    pub jitter: Duration,
    /// Probability that a chunk is held for `stall` on top (a packet lost and retransmitted).
    pub stall_probability: f64,
    /// How long a stalled chunk is held.
    pub stall: Duration,
    /// Probability, per chunk, that the connection is reset instead of forwarding it.
    pub reset_probability: f64,
    /// The link is down: new connections are refused (closed at once) and open ones reset.
    pub down: bool,
}

impl LinkProfile {
    /// A clean link with this round-trip time.
    pub fn rtt(rtt: Duration) -> Self {
        Self {
            one_way: rtt / 2,
            jitter: Duration::ZERO,
            stall_probability: 0.0,
            stall: Duration::ZERO,
            reset_probability: 0.0,
            down: false,
        }
    }
}

/// A running proxy in front of one upstream address.
#[derive(Debug)]
pub struct LatencyProxy {
    addr: SocketAddr,
    profile: Arc<Mutex<LinkProfile>>,
    accept: JoinHandle<()>,
}

impl LatencyProxy {
    /// Listens on a free loopback port and forwards to `upstream` through a link of `profile`.
    pub async fn start(upstream: SocketAddr, profile: LinkProfile) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let profile = Arc::new(Mutex::new(profile));
        let shared = Arc::clone(&profile);
        let accept = tokio::spawn(async move {
            let mut seed = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                seed += 1;
                let link = Arc::clone(&shared);
                tokio::spawn(async move {
                    if current(&link).down {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    relay(client, server, link, seed).await;
                });
            }
        });
        Ok(Self { addr, profile, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for HTTP upstreams.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the link for every chunk forwarded from now on.
    pub fn set_profile(&self, profile: LinkProfile) {
        *self.profile.lock().unwrap_or_else(|p| p.into_inner()) = profile;
    }

    /// The link as it is now.
    pub fn profile(&self) -> LinkProfile {
        current(&self.profile)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn current(link: &Mutex<LinkProfile>) -> LinkProfile {
    *link.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forwards both directions until either side closes, the link resets it, or it goes down.
async fn relay(client: TcpStream, server: TcpStream, link: Arc<Mutex<LinkProfile>>, seed: u64) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, Arc::clone(&link), seed * 2);
    let down = pump(server_read, client_write, link, seed * 2 + 1);
    // Either direction ending (closed or reset) ends the connection, as a reset would.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// One direction: a reader that stamps each chunk with its delivery time and a writer that waits
/// for it, so delay does not slow down reading (the link carries several chunks at once).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Arc<Mutex<LinkProfile>>,
    seed: u64,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let p = current(&link);
            if p.down || (p.reset_probability > 0.0 && rng.gen_bool(p.reset_probability.min(1.0))) {
                return;
            }
            let mut delay = p.one_way;
            if !p.jitter.is_zero() {
                delay += p.jitter.mul_f64(rng.r#gen::<f64>());
            }
            if p.stall_probability > 0.0 && rng.gen_bool(p.stall_probability.min(1.0)) {
                delay += p.stall;
            }
            last = last.max(Instant::now() + delay);
            if tx.send((last, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    // The reader ending first still lets queued chunks be delivered; a reset drops them.
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn bytes_pass_intact_and_in_order_through_jitter_and_stalls() {
        let profile = LinkProfile {
            one_way: Duration::from_millis(1),
            jitter: Duration::from_millis(3),
            stall_probability: 0.2,
            stall: Duration::from_millis(5),
            reset_probability: 0.0,
            down: false,
        };
        let proxy = LatencyProxy::start(echo().await, profile).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.split();
        let write = async {
            for chunk in sent.chunks(1000) {
                w.write_all(chunk).await.unwrap();
            }
        };
        let mut got = vec![0u8; sent.len()];
        let read = r.read_exact(&mut got);
        let (_, n) = tokio::join!(write, read);
        n.unwrap();
        assert!(got == sent, "echoed bytes differ");
    }

    #[tokio::test]
    async fn a_reset_link_closes_the_connection() {
        let mut profile = LinkProfile::rtt(Duration::ZERO);
        profile.reset_probability = 1.0;
        let proxy = LatencyProxy::start(echo().await, profile).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        let read = s.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "nothing comes back through a reset link: {read:?}");
    }

    #[tokio::test]
    async fn a_link_taken_down_refuses_new_connections_and_comes_back() {
        let proxy = LatencyProxy::start(echo().await, LinkProfile::rtt(Duration::ZERO)).await.unwrap();
        let round_trip = |addr| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map(|_| buf)
        };
        assert_eq!(&round_trip(proxy.addr()).await.unwrap(), b"ping");
        proxy.set_profile(LinkProfile { down: true, ..proxy.profile() });
        assert!(round_trip(proxy.addr()).await.is_err(), "down: the connection is closed");
        proxy.set_profile(LinkProfile { down: false, ..proxy.profile() });
        assert_eq!(&round_trip(proxy.addr()).await.unwrap(), b"ping");
    }
}
