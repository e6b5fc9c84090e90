//! Reader: TLS handshakes with this host's own HTTPS listeners, as Cloudflare's edge opens them
//! (the zone's hostname as SNI, TLS 1.2 or 1.3, no ALPN), capturing whatever certificate chain
//! the server presents and whether it asks for a client certificate.
//!
//! Owns: the sockets and rustls client state of the check, and the classification of how a
//! handshake ended ([`TlsOutcome`]). Must not: judge the certificate (`analysis::tls` does,
//! against the trust roots, the names and the clock), or connect anywhere but the addresses
//! it is given — which the caller takes from this host's own interfaces and listeners.
//!
//! Bounds: each connection has its own deadline (connect, then every read and write); three
//! handshakes per listener × hostname (both versions, then each alone).

use crate::snapshot::{ClientCertAsk, TlsOutcome, TlsProbe};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Accepts any certificate and keeps a copy: the reader captures, the analysis judges. The
/// handshake signatures are still checked with the presented key (a server that cannot
/// prove it holds the key fails here, as it would at Cloudflare).
#[derive(Debug)]
struct Capture {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Vec<Vec<u8>>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.chain.lock() {
            *c = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|d| d.as_ref().to_vec())
                .collect();
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Notes that the server asked for a client certificate, and offers none.
#[derive(Debug, Default)]
struct AskedForCert(Mutex<bool>);

impl rustls::client::ResolvesClientCert for AskedForCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if let Ok(mut a) = self.0.lock() {
            *a = true;
        }
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The TCP stream, keeping the first bytes the server sent (to recognise a plain HTTP answer).
struct Recording {
    tcp: TcpStream,
    first: Vec<u8>,
    deadline: Instant,
}

impl Recording {
    fn arm(&self) -> io::Result<()> {
        let left = self
            .deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "deadline"))?;
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.set_write_timeout(Some(left))
    }
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        let n = self.tcp.read(buf)?;
        if self.first.len() < 64 {
            let take = n.min(64 - self.first.len());
            self.first.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// What one handshake gave.
struct Attempt {
    outcome: TlsOutcome,
    negotiated: Option<String>,
    chain: Vec<Vec<u8>>,
    asked: bool,
}

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        other => format!("{other:?}"),
    }
}

/// `HandshakeFailure` → `handshake_failure` (the RFC 8446 names).
fn alert_name(a: rustls::AlertDescription) -> String {
    let d = format!("{a:?}");
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out.replace("unrecognised", "unrecognized")
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// One handshake offering `versions`, with `hostname` as SNI (an IP address when the name is
/// one). After the handshake, a short read catches the alert a server that requires a client
/// certificate sends once it sees none (TLS 1.3 ends the client's side of the handshake first).
fn attempt(
    addr: SocketAddr,
    hostname: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    timeout: Duration,
) -> Attempt {
    let fail = |outcome| Attempt {
        outcome,
        negotiated: None,
        chain: vec![],
        asked: false,
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let capture = Arc::new(Capture {
        provider: provider.clone(),
        chain: Mutex::new(vec![]),
    });
    let asked = Arc::new(AskedForCert::default());
    let config =
        match ClientConfig::builder_with_provider(provider).with_protocol_versions(versions) {
            Ok(b) => b
                .dangerous()
                .with_custom_certificate_verifier(capture.clone())
                .with_client_cert_resolver(asked.clone()),
            Err(e) => return fail(TlsOutcome::Failed(e.to_string())),
        };
    let name = match ServerName::try_from(hostname.to_string()) {
        Ok(n) => n,
        Err(e) => return fail(TlsOutcome::Failed(format!("{hostname:?}: {e}"))),
    };
    let tcp = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(t) => t,
        Err(e) => return fail(TlsOutcome::NoConnection(e.to_string())),
    };
    let mut io = Recording {
        tcp,
        first: vec![],
        deadline: Instant::now() + timeout,
    };
    let mut conn = match ClientConnection::new(Arc::new(config), name) {
        Ok(c) => c,
        Err(e) => return fail(TlsOutcome::Failed(e.to_string())),
    };
    let mut result = Ok(());
    // Bounded by the deadline: every read and write of `io` fails once it has passed.
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut io) {
            result = Err(e);
            break;
        }
    }
    let took = |c: &Mutex<Vec<Vec<u8>>>| c.lock().map(|v| v.clone()).unwrap_or_default();
    let was_asked = asked.0.lock().map(|a| *a).unwrap_or(false);
    let mut outcome = match &result {
        Ok(()) => TlsOutcome::Ok,
        Err(e) => classify(e, &io.first),
    };
    if outcome == TlsOutcome::Ok && was_asked {
        // The verdict on our empty Certificate comes after the handshake, as an alert.
        io.deadline = Instant::now() + timeout.min(Duration::from_secs(2));
        let mut buf = [0u8; 256];
        let r = conn
            .complete_io(&mut io)
            .and_then(|_| conn.reader().read(&mut buf));
        if let Err(e) = r
            && let Some(rustls::Error::AlertReceived(a)) =
                e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            outcome = TlsOutcome::Alert(alert_name(*a));
        }
    }
    let negotiated = conn.protocol_version().map(|v| {
        let suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!(" {:?}", s.suite()))
            .unwrap_or_default();
        format!("{}{suite}", version_name(v))
    });
    Attempt {
        outcome,
        negotiated,
        chain: took(&capture.chain),
        asked: was_asked,
    }
}

/// How a handshake that failed ended.
fn classify(e: &io::Error, first: &[u8]) -> TlsOutcome {
    // A TLS record starts with its content type (20..=24); an answer in readable text
    // (`HTTP/1.1 400 Bad Request`, or an HTML error page without a status line) is plain HTTP.
    if first.len() >= 4
        && first[..4]
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ')
    {
        let line = String::from_utf8_lossy(first);
        return TlsOutcome::PlainHttp(line.lines().next().unwrap_or("").trim().to_string());
    }
    if let Some(rustls::Error::AlertReceived(a)) =
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
    {
        return TlsOutcome::Alert(alert_name(*a));
    }
    if is_timeout(e) {
        return TlsOutcome::Timeout;
    }
    if e.kind() == io::ErrorKind::UnexpectedEof || first.is_empty() {
        return TlsOutcome::Failed(format!(
            "the server closed the connection without a TLS answer ({e})"
        ));
    }
    TlsOutcome::Failed(e.to_string())
}

/// Probes `hostname` on `address:port`: both versions offered (the chain and the outcome),
/// then each version alone (which ones the server completes).
pub fn probe(address: IpAddr, port: u16, hostname: &str, timeout: Duration) -> TlsProbe {
    let addr = SocketAddr::new(address, port);
    let both = attempt(addr, hostname, rustls::ALL_VERSIONS, timeout);
    let mut versions = vec![];
    if matches!(both.outcome, TlsOutcome::Ok) || !both.chain.is_empty() {
        for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let a = attempt(addr, hostname, &[v], timeout);
            if a.outcome == TlsOutcome::Ok
                || matches!(&a.outcome, TlsOutcome::Alert(_)) && !a.chain.is_empty()
            {
                versions.push(version_name(v.version));
            }
        }
    }
    let client_cert = match (both.asked, &both.outcome) {
        (false, _) => ClientCertAsk::No,
        (true, TlsOutcome::Ok) => ClientCertAsk::Requested,
        (true, _) => ClientCertAsk::Required,
    };
    TlsProbe {
        address,
        port,
        hostname: hostname.to_string(),
        outcome: both.outcome,
        versions,
        negotiated: both.negotiated,
        chain: both.chain.iter().map(|d| hex(d)).collect(),
        client_cert,
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_the_rfc_ones() {
        assert_eq!(
            alert_name(rustls::AlertDescription::HandshakeFailure),
            "handshake_failure"
        );
        assert_eq!(
            alert_name(rustls::AlertDescription::UnrecognisedName),
            "unrecognized_name"
        );
        assert_eq!(
            alert_name(rustls::AlertDescription::CertificateRequired),
            "certificate_required"
        );
    }

    #[test]
    fn a_plain_http_answer_is_recognised() {
        let e = io::Error::new(io::ErrorKind::InvalidData, "corrupt message");
        assert_eq!(
            classify(&e, b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n"),
            TlsOutcome::PlainHttp("HTTP/1.1 400 Bad Request".into())
        );
    }
}
