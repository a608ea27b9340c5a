//! A counting TCP proxy in front of an instance's HTTP port: the instance's public URL names the proxy,
//! so everything the other instance sends it (requests and their answers) passes here and is counted,
//! byte for byte as it is on the wire above TCP (HTTP/1.1 headers and bodies; no TLS on loopback).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes through the proxy so far.
#[derive(Default)]
pub struct Counted {
    /// Client to server (requests).
    pub up: AtomicU64,
    /// Server to client (answers).
    pub down: AtomicU64,
    pub connections: AtomicU64,
}

impl Counted {
    /// (requests bytes, answer bytes, connections).
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.up.load(Ordering::Relaxed),
            self.down.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
        )
    }
}

pub struct Proxy {
    pub port: u16,
    pub counted: Arc<Counted>,
    listener: Option<TcpListener>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Binds a free loopback port; nothing is forwarded until [`Proxy::forward_to`].
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self {
            port: listener.local_addr().unwrap().port(),
            counted: Arc::default(),
            listener: Some(listener),
            task: None,
        }
    }

    /// Forwards every connection to `127.0.0.1:target`.
    pub fn forward_to(&mut self, target: u16) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let counted = self.counted.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    counted.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let up = pipe(in_read, out_write, counted.clone(), true);
                    let down = pipe(out_read, in_write, counted, false);
                    let _ = tokio::join!(up, down);
                });
            }
        }));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counted: Arc<Counted>,
    up: bool,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let counter = if up { &counted.up } else { &counted.down };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
