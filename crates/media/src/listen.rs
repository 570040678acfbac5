//! The TLS listener beside the TLS connector: connections a trunk opens to us (RFC 3261 §18:
//! a request inside a dialog goes to the Contact URI; once our own connection has closed the
//! trunk opens a new one to our advertised address), each handshaken with our certificate off
//! the SIP loop and handed to it ready to read and write.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The longest a TLS handshake on an accepted connection may take (a peer that connects and
/// says nothing holds a task and a socket for no longer).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Our certificate chain and its private key (PEM files), served to the trunks that open TLS
/// connections to us (`[trunk] tls_cert_file` / `tls_key_file`).
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TlsIdentity {
    /// The acceptor: our chain and key, TLS 1.2 and 1.3, no client certificate asked for (the
    /// trunk is authenticated when we connect to it; a request on its connection is accepted
    /// only inside a dialog we placed).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, Error> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |path: &std::path::Path, why: String| Error::Config {
            field: "trunk.tls_cert_file",
            why: format!("{}: {why}", path.display()),
        };
        let chain = CertificateDer::pem_file_iter(&self.cert_file)
            .map_err(|e| bad(&self.cert_file, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&self.cert_file, e.to_string()))?;
        if chain.is_empty() {
            return Err(bad(&self.cert_file, "no certificate in it".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| Error::Config {
            field: "trunk.tls_key_file",
            why: format!("{}: {e}", self.key_file.display()),
        })?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&self.cert_file, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Config {
            field: "trunk.tls_key_file",
            why: format!("{}: {e}", self.key_file.display()),
        })?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// A connection the far end opened, its handshake done: the halves the SIP loop adopts.
pub struct Accepted {
    pub read: Box<dyn AsyncRead + Unpin + Send>,
    pub write: Box<dyn AsyncWrite + Unpin + Send + Sync>,
    pub peer: SocketAddr,
}

/// The connections a TLS listener accepted, in the order their handshakes finished. Read by
/// the SIP loop only (the lock is never contended: it lets the loop wait on it beside its
/// other inputs through a shared borrow).
pub struct Inbound {
    rx: Mutex<mpsc::Receiver<Accepted>>,
}

impl Inbound {
    /// Accepts on `listener` until `stop`: each connection's handshake runs in a task of its
    /// own (bounded by [`HANDSHAKE_TIMEOUT`]), so a slow peer delays no other; a failed one
    /// is logged and dropped.
    pub fn start(
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        stop: CancellationToken,
    ) -> Inbound {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!(error = %e, "SIP/TLS: accept");
                            // EMFILE and the like: do not spin.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stop.cancelled() => return,
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let (read, write) = tokio::io::split(tls);
                            let _ = tx
                                .send(Accepted {
                                    read: Box::new(read),
                                    write: Box::new(write),
                                    peer,
                                })
                                .await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, %peer, "SIP/TLS: handshake failed")
                        }
                        Err(_) => tracing::info!(%peer, "SIP/TLS: handshake timed out"),
                    }
                });
            }
        });
        Inbound { rx: Mutex::new(rx) }
    }

    /// The next connection ready to adopt (pending forever once the listener has stopped).
    pub async fn next(&self) -> Accepted {
        match self.rx.lock().await.recv().await {
            Some(a) => a,
            None => std::future::pending().await,
        }
    }
}
