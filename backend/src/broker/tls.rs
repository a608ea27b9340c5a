//! MQTT over TLS: the same sessions behind rustls, when a certificate and key are configured.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::Broker;

/// The certificate or key could not be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Reads the PEM files into an acceptor.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            TlsError(format!(
                "mqtt_tls_cert (PEPEUNIT_MQTT_TLS_CERT) {}: {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "mqtt_tls_cert (PEPEUNIT_MQTT_TLS_CERT) {}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        TlsError(format!(
            "mqtt_tls_key (PEPEUNIT_MQTT_TLS_KEY) {}: {e}",
            key.display()
        ))
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError(format!(
                "mqtt_tls_cert / mqtt_tls_key do not make a usable pair: {e}"
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections until the task is dropped; a failed handshake only ends that connection.
pub async fn serve(broker: Broker, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "mqtt tls accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // The cap is taken before the handshake, which is where an anonymous client costs the most.
        let Some(admitted) = broker.admit(peer) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (broker, acceptor) = (broker.clone(), acceptor.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => broker.serve_admitted(tls, peer, admitted).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "mqtt tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "mqtt tls handshake timed out"),
            }
        });
    }
}
