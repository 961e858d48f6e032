//! gRPC channels to the control plane over the mesh's TLS.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// A lazily connecting channel to `addr`, doing TLS with `tls` (which
/// decides which server identity is acceptable and which certificate, if
/// any, we present). Reconnects on demand like any tonic channel.
pub fn tls_channel(addr: SocketAddr, tls: rustls::ClientConfig) -> Channel {
    let connector = TlsConnector::from(Arc::new(tls));
    // The scheme is only a formality for tonic: TLS happens in the connector.
    let endpoint = Endpoint::from(http_uri(addr));
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(ServerName::IpAddress(addr.ip().into()), tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    }))
}

/// A plaintext channel (the control plane's debug port, tests).
pub fn plaintext_channel(addr: SocketAddr) -> Channel {
    Endpoint::from(http_uri(addr)).connect_lazy()
}

fn http_uri(addr: SocketAddr) -> Uri {
    Uri::builder()
        .scheme("http")
        .authority(addr.to_string().as_str())
        .path_and_query("/")
        .build()
        .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1/"))
}
