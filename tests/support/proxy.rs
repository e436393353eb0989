//! A TCP proxy in front of the apiserver for one process, so a test can cut that process off
//! (a network partition, or an apiserver outage when every process's proxy is cut) and let it
//! back, without touching the apiserver the other tests share.
//!
//! Contract: [`Proxy::cut`] drops every open connection and refuses new ones until
//! [`Proxy::restore`]; bytes pass unchanged, so TLS to the apiserver still verifies. It listens
//! on 127.0.0.1 only and stops with the test's runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    /// True while cut.
    cut: watch::Sender<bool>,
}

impl Proxy {
    /// A proxy forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (cut, cut_rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }

    /// A copy of `kubeconfig` whose server is reached through this proxy, written to `dir`.
    pub fn kubeconfig(&self, kubeconfig: &Path, dir: &Path, name: &str) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("a server in the kubeconfig")
            .to_owned();
        let port = server.rsplit(':').next().expect("a port");
        let proxied = server.replace(&format!(":{port}"), &format!(":{}", self.port));
        let path = dir.join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text.replace(&server, &proxied)).expect("write kubeconfig");
        path
    }
}

/// The apiserver address `kubeconfig` names.
pub fn apiserver(kubeconfig: &Path) -> SocketAddr {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server in the kubeconfig");
    let authority = server.trim_start_matches("https://").trim_end_matches('/');
    authority.parse().expect("the apiserver is an IP and port")
}
