//! TLS to the PostgreSQL store, with libpq's `sslmode` and `sslrootcert` read from the URL:
//!
//! - `disable`: plain; `prefer` (the default): TLS when the server offers it, else plain;
//!   `require`: TLS or nothing. None of them checks the server's certificate (as libpq), except
//!   `require` with `sslrootcert`, which checks the chain as `verify-ca` does (as libpq).
//! - `verify-ca`: TLS, with the server's chain checked against `sslrootcert=PATH` (a PEM file) or
//!   the platform's roots; `verify-full`: that and the host name.
//!
//! The `postgres` crate parses `sslmode` but knows only disable, prefer and require, and neither
//! `sslrootcert` nor a root store: so the store takes those out of the URL's query itself, hands
//! the rest to it, and makes the rustls configuration the mode asks for.

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, all of it but `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Mode, String> {
        Ok(match value {
            "disable" => Mode::Disable,
            "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            "allow" => {
                return Err(
                    "sslmode=allow is not supported; use sslmode=prefer (TLS when the server offers it) \
                            or sslmode=disable"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// Where the roots that a server's certificate must chain to come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The platform's store (no `sslrootcert`, or libpq's `sslrootcert=system`).
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Roots::System => f.write_str("the system's root certificates"),
            Roots::File(path) => write!(f, "sslrootcert={}", path.display()),
        }
    }
}

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: Mode,
    /// Given as `sslrootcert`, if at all.
    pub(crate) root_cert: Option<Roots>,
}

/// The checks a connection makes of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain(Roots),
    ChainAndName(Roots),
}

impl TlsSettings {
    /// What the `postgres` crate is told: whether to ask for TLS and whether to go on without it.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    pub(crate) fn mode_name(&self) -> &'static str {
        self.mode.name()
    }

    fn check(&self) -> Check {
        let roots = || self.root_cert.clone().unwrap_or(Roots::System);
        match (self.mode, &self.root_cert) {
            (Mode::VerifyFull, _) => Check::ChainAndName(roots()),
            (Mode::VerifyCa, _) | (Mode::Require, Some(_)) => Check::Chain(roots()),
            (Mode::Disable | Mode::Prefer | Mode::Require, _) => Check::Nothing,
        }
    }

    /// The connector for `postgres::Config::connect`; its errors say what to do.
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.check() {
            Check::Nothing => Arc::new(AnyCertificate(provider.clone())),
            Check::Chain(roots) => Arc::new(ChainOnly(webpki_verifier(&roots, &provider)?)),
            Check::ChainAndName(roots) => webpki_verifier(&roots, &provider)?,
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        // As libpq 17: PostgreSQL 17's direct TLS (sslnegotiation=direct) demands it, others ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(MakeRustlsConnect::new(config))
    }
}

fn webpki_verifier(
    roots: &Roots,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let store = root_store(roots)?;
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
        .build()
        .map_err(|e| format!("cannot use the roots of {roots}: {e}"))
}

fn root_store(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "cannot read the root certificate file sslrootcert={shown} ({e}); give the path of a \
                         readable PEM file holding the CA certificate that signed the server's"
                    )
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "the root certificate file sslrootcert={shown} holds no PEM certificate \
                     (-----BEGIN CERTIFICATE-----); give the CA certificate that signed the server's"
                ));
            }
            for cert in certs {
                store.add(cert).map_err(|e| {
                    format!("a certificate in sslrootcert={shown} cannot serve as a root ({e}); give a CA certificate")
                })?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "no root certificates found on this system{why}; give the CA certificate that signed the \
                     server's with sslrootcert=PATH, or install the system's (ca-certificates)"
                ));
            }
        }
    }
    Ok(store)
}

/// libpq's `sslmode=require` and `prefer`: encrypted, and whoever answers is taken at its word. The
/// handshake's signatures are still checked (they prove nothing without the chain, but cost nothing).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain as webpki checks it, whatever name the certificate is for. webpki checks
/// the name only once the chain verified, so a name error means the chain is good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The URL split in two: what it asks of TLS, and the URL without `sslmode` and `sslrootcert` for
/// `postgres::Config` (which refuses verify-ca, verify-full and sslrootcert). A URL that is not
/// `postgres://…` is handed on whole. The error is the reason, without the URL (it may hold a
/// password).
pub(crate) fn split_url(url: &str) -> Result<(TlsSettings, String), String> {
    let mut settings = TlsSettings {
        mode: Mode::Prefer,
        root_cert: None,
    };
    let Some((head, query)) = split_query(url) else {
        return Ok((settings, url.to_string()));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key)?.as_str() {
            "sslmode" => settings.mode = Mode::parse(&decode(value)?)?,
            "sslrootcert" => settings.root_cert = Some(roots(&decode(value)?)?),
            key @ ("sslcert" | "sslkey" | "sslpassword") => {
                return Err(format!(
                    "{key}: client certificates are not supported; authenticate with a password or the \
                     server's other methods"
                ))
            }
            _ => kept.push(pair),
        }
    }
    if settings.root_cert == Some(Roots::System) && settings.mode != Mode::VerifyFull {
        // As libpq: any certificate a public CA issued, for any name, would pass otherwise.
        return Err("sslrootcert=system needs sslmode=verify-full".into());
    }
    let rest = if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    };
    Ok((settings, rest))
}

/// `url` without what [`split_url`] reads, as well as it can: for showing a URL it refused.
pub(crate) fn without_tls_params(url: &str) -> String {
    let Some((head, query)) = split_query(url) else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(key, _)| key);
            !matches!(
                decode(key).as_deref(),
                Ok("sslmode" | "sslrootcert" | "sslcert" | "sslkey" | "sslpassword")
            )
        })
        .collect();
    if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    }
}

/// A `postgres://` URL's part before its query and the query, found as the `postgres` crate finds
/// them: past the credentials (up to the first `@`), the first `?`.
fn split_query(url: &str) -> Option<(&str, &str)> {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|prefix| url.strip_prefix(prefix))?;
    let from = url.len() - rest.len() + rest.find('@').map_or(0, |at| at + 1);
    let at = from + url[from..].find('?')?;
    Some((&url[..at], &url[at + 1..]))
}

fn decode(text: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "a query parameter is not UTF-8 once decoded".into())
}

fn roots(value: &str) -> Result<Roots, String> {
    match value {
        "" => Err("sslrootcert is empty; give the path of the CA's PEM file".into()),
        "system" => Ok(Roots::System),
        path => Ok(Roots::File(PathBuf::from(path))),
    }
}

/// Why a connection attempt failed, in the words of TLS and with what to do, when TLS is what
/// failed; `host` names the server as the URL does.
pub(crate) fn explain(e: &postgres::Error, settings: &TlsSettings, host: &str) -> Option<String> {
    let mode = settings.mode_name();
    if let Some(error) = rustls_error(e) {
        return Some(match error {
            rustls::Error::InvalidCertificate(cert) => certificate_refused(cert, settings, host),
            other => format!(
                "the TLS handshake with {host} failed ({other}, sslmode={mode}); check that it is a PostgreSQL \
                 server with TLS set up"
            ),
        });
    }
    let refused = std::iter::successors(std::error::Error::source(e), |s| s.source())
        .any(|s| s.to_string() == "server does not support TLS");
    refused.then(|| {
        format!(
            "the server at {host} does not accept TLS connections, which sslmode={mode} demands; turn TLS on \
             there (ssl = on in postgresql.conf), or connect over a network you trust with sslmode=disable"
        )
    })
}

fn certificate_refused(error: &CertificateError, settings: &TlsSettings, host: &str) -> String {
    let roots = match settings.check() {
        Check::Chain(roots) | Check::ChainAndName(roots) => roots.to_string(),
        Check::Nothing => "no roots".into(),
    };
    let what = match error {
        CertificateError::UnknownIssuer => format!(
            "it is not signed by a CA in {roots}; give the CA certificate that signed it with \
             sslrootcert=PATH"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
            "it is not issued for the host name {host} ({error}); connect by a name it is issued for, or \
             use sslmode=verify-ca to check the chain alone"
        ),
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => format!(
            "it is outside its validity period ({error}); renew the server's certificate, or check this \
             machine's clock"
        ),
        other => format!("{other}; check the server's certificate and {roots}"),
    };
    format!(
        "the certificate of the server at {host} does not verify (sslmode={}): {what}",
        settings.mode_name()
    )
}

/// The rustls error under a failed connection: tokio-rustls wraps it in an io::Error, whose
/// `source()` skips it, so each io::Error is opened by hand.
fn rustls_error(e: &postgres::Error) -> Option<&rustls::Error> {
    std::iter::successors(std::error::Error::source(e), |s| s.source()).find_map(|s| {
        s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (TlsSettings, String) {
        split_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn the_tls_parameters_are_taken_out_and_the_rest_kept_in_order() {
        let (tls, rest) = split(
            "postgres://u@h:5/db?options=-csearch_path%3Ds&sslmode=verify-full&sslrootcert=%2Fetc%2Fmy%20ca.pem&application_name=a",
        );
        assert_eq!(tls.mode, Mode::VerifyFull);
        assert_eq!(tls.root_cert, Some(Roots::File(PathBuf::from("/etc/my ca.pem"))));
        assert_eq!(
            rest,
            "postgres://u@h:5/db?options=-csearch_path%3Ds&application_name=a"
        );
        assert_eq!(tls.ssl_mode(), SslMode::Require);
        let (tls, rest) = split("postgresql://u@h/db?sslmode=verify-ca");
        assert_eq!((tls.mode, rest.as_str()), (Mode::VerifyCa, "postgresql://u@h/db"));
    }

    #[test]
    fn without_parameters_it_is_prefer_and_the_url_is_untouched() {
        for url in [
            "postgres://u@h/db",
            "postgres://u@h/db?application_name=a",
            "host=h user=u",
        ] {
            let (tls, rest) = split(url);
            assert_eq!(tls.mode, Mode::Prefer);
            assert_eq!(tls.check(), Check::Nothing);
            assert_eq!(rest, url);
        }
    }

    #[test]
    fn a_question_mark_or_at_sign_in_the_password_is_not_the_query() {
        // As the postgres crate reads it: the credentials run to the first `@`.
        let (tls, rest) = split("postgres://u:p?sslmode=bogus@h/db?sslmode=disable");
        assert_eq!(tls.mode, Mode::Disable);
        assert_eq!(rest, "postgres://u:p?sslmode=bogus@h/db");
    }

    #[test]
    fn which_checks_each_mode_makes() {
        let check = |query: &str| split(&format!("postgres://u@h/db?{query}")).0.check();
        let file = || Roots::File(PathBuf::from("/ca.pem"));
        assert_eq!(check("sslmode=require"), Check::Nothing);
        assert_eq!(check("sslmode=require&sslrootcert=/ca.pem"), Check::Chain(file()));
        assert_eq!(check("sslmode=prefer&sslrootcert=/ca.pem"), Check::Nothing);
        assert_eq!(check("sslmode=verify-ca"), Check::Chain(Roots::System));
        assert_eq!(
            check("sslmode=verify-full&sslrootcert=/ca.pem"),
            Check::ChainAndName(file())
        );
        assert_eq!(
            check("sslmode=verify-full&sslrootcert=system"),
            Check::ChainAndName(Roots::System)
        );
    }

    #[test]
    fn what_the_store_cannot_honour_is_refused_with_the_reason() {
        let refused = |query: &str| split_url(&format!("postgres://u:secret@h/db?{query}")).unwrap_err();
        assert!(refused("sslmode=verify_full").contains("not one of disable, prefer, require"));
        assert!(refused("sslmode=").contains("sslmode= is not one of"));
        assert!(refused("sslrootcert=").contains("sslrootcert is empty"));
        assert!(refused("sslmode=require&sslrootcert=system").contains("needs sslmode=verify-full"));
        assert!(refused("sslcert=/c.pem").contains("client certificates are not supported"));
        assert!(refused("sslmode=%FF").contains("not UTF-8"));
        for query in ["sslmode=bogus", "sslcert=x"] {
            assert!(!refused(query).contains("secret"));
        }
    }

    #[test]
    fn a_url_with_the_stores_own_parameters_is_shown_masked() {
        let url = "postgres://alice:hunter2@db.example/o?sslmode=verify-full&sslrootcert=%2Fca.pem";
        assert_eq!(crate::masked_url(url), "postgres://alice:***@db.example:5432/o");
        // Refused, it is still shown without its password.
        assert_eq!(
            crate::masked_url("postgres://alice:hunter2@db.example/o?sslmode=bogus"),
            "postgres://alice:***@db.example:5432/o"
        );
    }
}
