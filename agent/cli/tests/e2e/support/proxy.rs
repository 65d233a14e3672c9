//! A TCP proxy in front of an RPC endpoint that a test can take down and bring back, cutting
//! every open connection: an RPC node that is down for a while.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropped, it stops.
pub struct Proxy {
    up: watch::Sender<bool>,
    /// Its URL (`http://127.0.0.1:PORT`).
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy forwarding to `target` (`http://127.0.0.1:PORT`).
    pub async fn start(target: &str) -> Self {
        let target: SocketAddr = target.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, watch_up) = watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let mut up = watch_up.clone();
                if !*up.borrow() {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up.wait_for(|u| !*u) => {}
                    }
                });
            }
        });
        Self { up, url, task }
    }

    /// Takes the endpoint down (open connections are cut, new ones closed at once) or brings it back.
    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }
}
