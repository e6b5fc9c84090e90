//! The TLS half of the audit: what Cloudflare's edge makes of each HTTPS listener's handshake
//! and certificate in the zone's SSL mode — 525 (no handshake), 526 (an invalid certificate in
//! Full (strict)) or fine.
//!
//! Owns: the SSL mode's meaning (which ports Cloudflare connects to; what it accepts), which
//! listeners are probed ([`endpoints`], from this host's own addresses only), and the judgement
//! of the captured handshakes ([`judge`]): validity window, name (the SAN rules of RFC 6125, by
//! webpki), chain to Mozilla's root program (webpki-roots) or to the Cloudflare Origin CA roots,
//! self-signed, client-certificate requests. Must not: do I/O (the reader captured everything).
//!
//! Cloudflare's documented behaviour (developers.cloudflare.com, "SSL/TLS encryption modes"):
//! Flexible connects to the origin over plain HTTP (port 80 and the other HTTP ports); Full
//! over HTTPS accepting any certificate, expired and self-signed included; Full (strict) over
//! HTTPS requiring a certificate valid now, for the hostname, chaining to a publicly trusted CA
//! or to the Cloudflare Origin CA. A failed handshake is 525, an invalid certificate in strict
//! mode 526.

use crate::findings::{Code, Finding, Severity};
use crate::snapshot::{ClientCertAsk, Listener, TlsOutcome, TlsProbe};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The zone's SSL/TLS encryption mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SslMode {
    Flexible,
    Full,
    Strict,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        match s {
            "flexible" => Some(SslMode::Flexible),
            "full" => Some(SslMode::Full),
            "strict" | "full-strict" | "full_strict" => Some(SslMode::Strict),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Flexible => "flexible",
            SslMode::Full => "full",
            SslMode::Strict => "strict",
        }
    }
    /// Ports audited when none are configured: the ones Cloudflare connects to in this mode.
    pub fn default_ports(self) -> Vec<u16> {
        match self {
            SslMode::Flexible => vec![80],
            SslMode::Full | SslMode::Strict => vec![443],
        }
    }
}

/// The bundled Cloudflare Origin CA roots (rules/cloudflare-origin-ca.pem: source and
/// fingerprints in its header).
pub const BUNDLED_ORIGIN_CA: &str = include_str!("../../rules/cloudflare-origin-ca.pem");

/// The certificates of a PEM text (DER), or what is wrong with it. No certificate is an error.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut out = vec![];
    for c in CertificateDer::pem_slice_iter(pem) {
        let c = c.map_err(|e| format!("not a PEM certificate list: {e}"))?;
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| format!("certificate {}: {e}", out.len() + 1))?;
        out.push(c.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(out)
}

/// The bundled roots, DER.
pub fn bundled_origin_ca() -> Vec<Vec<u8>> {
    pem_certs(BUNDLED_ORIGIN_CA.as_bytes()).unwrap_or_default()
}

/// What the TLS check needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `None`: TLS is not checked (no mode configured).
    pub mode: Option<SslMode>,
    pub hostnames: Vec<String>,
    /// A certificate expiring within this many days is a warning.
    pub expiry_warning_days: i64,
    /// The Cloudflare Origin CA roots (DER): the bundled ones, or the configured file's.
    pub origin_ca: Vec<Vec<u8>>,
}

/// One listener × hostname, judged: the `tls` array of the JSON report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRow {
    pub address: IpAddr,
    pub port: u16,
    pub hostname: String,
    /// `ok`, `no-connection`, `timeout`, `alert`, `plain-http` or `failed`.
    pub handshake: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub versions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertInfo>,
    /// The leaf covers the hostname (SAN, RFC 6125 wildcards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_match: Option<bool>,
    /// `public` (Mozilla's root program), `origin-ca`, `self-signed` or `untrusted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
    pub client_cert: ClientCertAsk,
    /// Finding codes raised for this row.
    pub codes: Vec<Code>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub san: Vec<String>,
    pub not_before: String,
    pub not_after: String,
    /// Whole days from the analysis time to notAfter (negative: expired).
    pub days_left: i64,
    pub not_before_unix: i64,
    /// notAfter, Unix seconds.
    pub not_after_unix: i64,
}

/// The addresses and ports to probe: for each public address of this host (the target's) and
/// each audited HTTPS port, the address when a listener serves it (bound to it, or to the
/// family's wildcard; a dual-stack `[::]` serves IPv4 too). Never another host's address.
pub fn endpoints(
    listeners: &[Listener],
    dests: &[IpAddr],
    ports: &[u16],
    https_ports: &[u16],
    bindv6only: bool,
) -> Vec<(IpAddr, u16)> {
    let mut out = vec![];
    for &d in dests {
        for &p in ports.iter().filter(|p| https_ports.contains(p)) {
            let served = listeners.iter().any(|l| {
                l.port == p
                    && (l.address == d
                        || (l.address.is_unspecified() && l.address.is_ipv4() == d.is_ipv4())
                        || (d.is_ipv4()
                            && l.address.is_unspecified()
                            && l.address.is_ipv6()
                            && !l.v6only.unwrap_or(bindv6only)))
            });
            if served && !out.contains(&(d, p)) {
                out.push((d, p));
            }
        }
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The leaf's fields, from its DER.
fn cert_info(der: &[u8], now: i64) -> Option<CertInfo> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    let nb = c.validity().not_before.timestamp();
    let na = c.validity().not_after.timestamp();
    let san = c
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                        4 => <[u8; 4]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b)
                            .ok()
                            .map(|a| IpAddr::from(a).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertInfo {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        san,
        not_before: rfc3339(nb),
        not_after: rfc3339(na),
        days_left: (na - now).div_euclid(86_400),
        not_before_unix: nb,
        not_after_unix: na,
    })
}

/// Which roots the chain reaches, checked at a moment inside the leaf's validity window (so an
/// expired certificate is still told apart from an untrusted one).
fn trust(chain: &[Vec<u8>], origin_ca: &[Vec<u8>], at: i64) -> (String, Option<String>) {
    let Some(leaf) = chain.first() else {
        return ("untrusted".into(), Some("no certificate".into()));
    };
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let ee = match webpki::EndEntityCert::try_from(&leaf_der) {
        Ok(e) => e,
        Err(e) => {
            return (
                "untrusted".into(),
                Some(format!("unreadable certificate: {e}")),
            );
        }
    };
    let inter: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let algs = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.max(0) as u64));
    let verify = |anchors: &[rustls::pki_types::TrustAnchor<'_>]| {
        ee.verify_for_usage(
            algs,
            anchors,
            &inter,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map(|_| ())
    };
    let public = verify(webpki_roots::TLS_SERVER_ROOTS);
    if public.is_ok() {
        return ("public".into(), None);
    }
    let ders: Vec<CertificateDer<'_>> = origin_ca
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let anchors: Vec<_> = ders
        .iter()
        .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
        .collect();
    if verify(&anchors).is_ok() {
        return ("origin-ca".into(), None);
    }
    let self_signed = x509_parser::parse_x509_certificate(leaf)
        .ok()
        .is_some_and(|(_, c)| c.subject().as_raw() == c.issuer().as_raw() && chain.len() == 1);
    let why = public.err().map(|e| format!("{e:?}"));
    if self_signed {
        ("self-signed".into(), why)
    } else {
        ("untrusted".into(), why)
    }
}

fn name_matches(leaf: &[u8], hostname: &str) -> bool {
    let der = CertificateDer::from(leaf);
    let (Ok(ee), Ok(name)) = (
        webpki::EndEntityCert::try_from(&der),
        ServerName::try_from(hostname),
    ) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

struct Ctx<'a> {
    mode: SslMode,
    row: &'a TlsRow,
}

impl Ctx<'_> {
    fn listener(&self) -> String {
        let a = match self.row.address {
            IpAddr::V6(v) => format!("[{v}]"),
            v => v.to_string(),
        };
        format!("{a}:{} ({})", self.row.port, self.row.hostname)
    }
    fn cert(&self) -> String {
        self.row
            .certificate
            .as_ref()
            .map(|c| {
                format!(
                    "; certificate subject {}, issuer {}, SAN [{}], notAfter {}",
                    c.subject,
                    c.issuer,
                    c.san.join(", "),
                    c.not_after
                )
            })
            .unwrap_or_default()
    }
    /// Severity and Cloudflare error of a certificate problem: an error (526) only in strict.
    fn cert_problem(&self, code: Code, full: Severity) -> (Severity, Option<u16>) {
        if self.mode == SslMode::Strict {
            (code.default_severity(), code.cf_error())
        } else {
            (full, None)
        }
    }
    fn finding(
        &self,
        code: Code,
        sev: (Severity, Option<u16>),
        what: String,
        fix: &str,
    ) -> Finding {
        Finding {
            code,
            severity: sev.0,
            message: format!("TLS on {}: {what}{}", self.listener(), self.cert()),
            ports: vec![self.row.port],
            sources: vec![],
            cf_error: sev.1,
            rules: vec![],
            fix: Some(fix.to_string()),
        }
    }
}

/// Judges the captured handshakes in `mode` at `now` (Unix seconds): the rows and findings.
pub fn judge(probes: &[TlsProbe], opts: &TlsOptions, now: i64) -> (Vec<TlsRow>, Vec<Finding>) {
    let Some(mode) = opts.mode else {
        return (vec![], vec![]);
    };
    let mut rows = vec![];
    let mut findings = vec![];
    for p in probes {
        let chain: Vec<Vec<u8>> = p.chain.iter().filter_map(|h| unhex(h)).collect();
        let certificate = chain.first().and_then(|l| cert_info(l, now));
        let (handshake, detail) = match &p.outcome {
            TlsOutcome::Ok => ("ok", None),
            TlsOutcome::NoConnection(e) => ("no-connection", Some(e.clone())),
            TlsOutcome::Timeout => ("timeout", None),
            TlsOutcome::Alert(a) => ("alert", Some(a.clone())),
            TlsOutcome::PlainHttp(l) => ("plain-http", Some(l.clone())),
            TlsOutcome::Failed(e) => ("failed", Some(e.clone())),
        };
        let (trust_s, trust_why) = match (&certificate, chain.is_empty()) {
            (Some(c), false) if c.not_before_unix <= c.not_after_unix => {
                let at = now.clamp(c.not_before_unix, c.not_after_unix);
                let (t, w) = trust(&chain, &opts.origin_ca, at);
                (Some(t), w)
            }
            (Some(_), false) => (
                Some("untrusted".to_string()),
                Some("notBefore after notAfter".into()),
            ),
            _ => (None, None),
        };
        let name_match = chain.first().map(|l| name_matches(l, &p.hostname));
        let mut row = TlsRow {
            address: p.address,
            port: p.port,
            hostname: p.hostname.clone(),
            handshake: handshake.into(),
            detail,
            versions: p.versions.clone(),
            negotiated: p.negotiated.clone(),
            certificate,
            name_match,
            trust: trust_s,
            client_cert: p.client_cert,
            codes: vec![],
        };
        let found = judge_row(
            mode,
            &row,
            trust_why.as_deref(),
            opts.expiry_warning_days,
            now,
        );
        row.codes = found.iter().map(|f| f.code).collect();
        findings.extend(found);
        rows.push(row);
    }
    (rows, findings)
}

fn judge_row(
    mode: SslMode,
    row: &TlsRow,
    trust_why: Option<&str>,
    warn_days: i64,
    now: i64,
) -> Vec<Finding> {
    let cx = Ctx { mode, row };
    let mut out = vec![];
    let required = row.client_cert == ClientCertAsk::Required;
    match row.handshake.as_str() {
        "no-connection" => {
            out.push(cx.finding(
                Code::TlsNotChecked,
                (Code::TlsNotChecked.default_severity(), None),
                format!(
                    "no TCP connection from this host ({}): the certificate could not be checked",
                    row.detail.as_deref().unwrap_or("")
                ),
                "let this host reach its own listener (e.g. accept on the loopback interface, `iif lo accept`), or check the certificate by hand: openssl s_client -connect ADDRESS:PORT -servername HOSTNAME",
            ));
            return out;
        }
        "plain-http" => {
            out.push(cx.finding(
                Code::HttpOnHttpsPort,
                (Code::HttpOnHttpsPort.default_severity(), Code::HttpOnHttpsPort.cf_error()),
                format!(
                    "the server answers plain HTTP (`{}`) where Cloudflare ({} mode) expects TLS",
                    row.detail.as_deref().unwrap_or(""),
                    mode.as_str()
                ),
                "enable TLS on this port (nginx `listen 443 ssl;` with ssl_certificate/ssl_certificate_key), or set the zone to Flexible if the origin has no certificate",
            ));
            return out;
        }
        "ok" => {}
        _ if required => {}
        h => {
            let why = match h {
                "timeout" => "connected, but no TLS answer within the time bound".to_string(),
                "alert" => format!(
                    "the server refused the handshake (TLS alert {}{})",
                    row.detail.as_deref().unwrap_or(""),
                    if row.detail.as_deref() == Some("unrecognized_name") {
                        ": no certificate configured for this name"
                    } else {
                        ""
                    }
                ),
                _ => format!(
                    "the handshake failed ({})",
                    row.detail.as_deref().unwrap_or("")
                ),
            };
            // This check offers what rustls implements: TLS 1.2 and 1.3 with ECDHE and AEAD
            // suites. Cloudflare also offers the origin TLS 1.0/1.1 and RSA key exchange / CBC
            // suites (developers.cloudflare.com/ssl/origin-configuration/cipher-suites/): a
            // refusal that may only mean "nothing in common with this check" is not a 525 on
            // this evidence, but a warning saying how to tell.
            let legacy_only = h == "alert"
                && matches!(
                    row.detail.as_deref(),
                    Some("protocol_version" | "handshake_failure" | "insufficient_security")
                );
            if legacy_only {
                out.push(cx.finding(
                    Code::TlsHandshakeFailed,
                    (Severity::Warning, None),
                    format!(
                        "{why}: nothing in common with TLS 1.2/1.3 and ECDHE AEAD suites. Cloudflare also offers TLS 1.0/1.1 and RSA/CBC suites, so it may still connect — or show 525"
                    ),
                    &format!(
                        "tell which: openssl s_client -connect {}:{} -servername {} -tls1_2 -cipher 'AES128-SHA:ECDHE-RSA-AES128-SHA'; then enable TLS 1.2 with an ECDHE-AEAD suite (Cloudflare's preferred) on the server",
                        match row.address {
                            IpAddr::V6(a) => format!("[{a}]"),
                            a => a.to_string(),
                        },
                        row.port,
                        row.hostname
                    ),
                ));
                return out;
            }
            out.push(cx.finding(
                Code::TlsHandshakeFailed,
                (Code::TlsHandshakeFailed.default_severity(), Code::TlsHandshakeFailed.cf_error()),
                why,
                "configure a certificate for this hostname on this port (nginx `server_name` + `ssl_certificate`), with TLS 1.2 or 1.3 and a modern cipher suite; check the server's error log",
            ));
            return out;
        }
    }
    if row.client_cert != ClientCertAsk::No {
        out.push(cx.finding(
            Code::TlsClientCertRequested,
            (Code::TlsClientCertRequested.default_severity(), None),
            format!(
                "the server {} a client certificate: fine when the zone uses Authenticated Origin Pulls (Cloudflare presents its certificate); every other client is refused",
                if required { "requires" } else { "asks for" }
            ),
            "if the zone does not use Authenticated Origin Pulls, turn it on (SSL/TLS → Origin Server) or drop ssl_verify_client",
        ));
    }
    let Some(c) = &row.certificate else {
        return out;
    };
    if now > c.not_after_unix {
        out.push(cx.finding(
            Code::TlsCertExpired,
            cx.cert_problem(Code::TlsCertExpired, Severity::Warning),
            format!("the certificate expired on {}", c.not_after),
            "renew it (certbot renew; or a Cloudflare Origin CA certificate, valid up to 15 years) and reload the server",
        ));
    } else if now < c.not_before_unix {
        out.push(cx.finding(
            Code::TlsCertExpired,
            cx.cert_problem(Code::TlsCertExpired, Severity::Warning),
            format!("the certificate is not valid before {}", c.not_before),
            "check this host's clock (timedatectl) and the certificate's issue date",
        ));
    } else if c.days_left < warn_days {
        out.push(cx.finding(
            Code::TlsCertExpiring,
            (Code::TlsCertExpiring.default_severity(), None),
            format!(
                "the certificate expires in {} day(s), on {}",
                c.days_left, c.not_after
            ),
            "renew it before it expires (certbot renew) and reload the server",
        ));
    }
    if row.name_match == Some(false) {
        out.push(cx.finding(
            Code::TlsCertNameMismatch,
            cx.cert_problem(Code::TlsCertNameMismatch, Severity::Info),
            format!(
                "the certificate does not cover {} (SAN [{}])",
                row.hostname,
                c.san.join(", ")
            ),
            &format!(
                "install a certificate for {} (a Cloudflare Origin CA certificate covers the zone's names)",
                row.hostname
            ),
        ));
    }
    if let Some("self-signed" | "untrusted") = row.trust.as_deref() {
        let what = if row.trust.as_deref() == Some("self-signed") {
            "the certificate is self-signed".to_string()
        } else {
            format!(
                "the chain reaches neither a publicly trusted root (Mozilla's root program) nor the Cloudflare Origin CA ({})",
                trust_why.unwrap_or("")
            )
        };
        out.push(cx.finding(
            Code::TlsCertUntrusted,
            cx.cert_problem(Code::TlsCertUntrusted, Severity::Info),
            what,
            &format!(
                "install a Cloudflare Origin CA certificate for {} (or a publicly trusted one, with its intermediates)",
                row.hostname
            ),
        ));
    }
    if mode == SslMode::Full {
        for f in out.iter_mut().filter(|f| {
            matches!(
                f.code,
                Code::TlsCertExpired | Code::TlsCertNameMismatch | Code::TlsCertUntrusted
            )
        }) {
            f.message
                .push_str(" — accepted in Full mode; Full (strict) would show 526");
        }
    }
    out
}
