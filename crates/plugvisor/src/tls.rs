//! go-plugin's AutoMTLS, host side. The host makes a throwaway client
//! certificate and hands its PEM to the plugin in `PLUGIN_CLIENT_CERT`; the
//! plugin answers with its own self-signed server certificate (base64 DER) in
//! the handshake's sixth field. Each side trusts exactly the other's
//! certificate: the host pins the server's, the plugin requires the client's.

use std::sync::Arc;

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

/// The name both sides put in and expect from certificates, as go-plugin does.
pub const SERVER_NAME: &str = "localhost";

/// AutoMTLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // each variant is its message
pub enum TlsError {
    #[error("cannot generate the AutoMTLS client certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the plugin's server certificate (handshake field 6) is not base64: {0}")]
    CertificateEncoding(base64::DecodeError),
    #[error("cannot build the TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The host's client certificate for one plugin start.
pub struct ClientIdentity {
    /// The certificate, as `PLUGIN_CLIENT_CERT` carries it.
    pub cert_pem: String,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl ClientIdentity {
    /// A self-signed ECDSA P-256 certificate for "localhost", usable as its
    /// own CA, as go-plugin's plugins expect.
    pub fn generate() -> Result<ClientIdentity, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, SERVER_NAME);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        Ok(ClientIdentity {
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

/// Decodes handshake field 6: base64 of the DER certificate (go-plugin omits
/// the padding; padded input is accepted too).
pub fn decode_server_cert(field: &str) -> Result<CertificateDer<'static>, TlsError> {
    let trimmed = field.trim().trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map(CertificateDer::from)
        .map_err(TlsError::CertificateEncoding)
}

/// A TLS client configuration that trusts exactly `server_cert` and, with an
/// identity, presents the host's client certificate. Speaks HTTP/2 (ALPN h2).
pub fn client_config(
    server_cert: &str,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedServerCert {
        pinned: decode_server_cert(server_cert)?,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(identity) => builder.with_client_auth_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS server configuration for a brokered connection (the host API), as
/// go-plugin's brokered servers have it: the host presents its own (client)
/// certificate and accepts only a client that presents exactly the plugin's
/// server certificate. Speaks HTTP/2.
pub(crate) fn server_config(
    identity: &ClientIdentity,
    plugin_cert: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedClientCert {
        pinned: decode_server_cert(plugin_cert)?,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![identity.cert.clone()],
            PrivateKeyDer::Pkcs8(identity.key.clone_key()),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts only the plugin's own certificate as a client certificate.
#[derive(Debug)]
struct PinnedClientCert {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS server name plugvisor connects to.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("localhost is a valid server name")
}

/// Accepts only the one certificate the plugin announced. The usual web PKI
/// checks do not apply: go-plugin's server certificate is a self-signed CA
/// used as a leaf, which webpki refuses by design.
#[derive(Debug)]
struct PinnedServerCert {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_is_a_pem_certificate() {
        let identity = ClientIdentity::generate().unwrap();
        assert!(identity.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let der = base64::engine::general_purpose::STANDARD_NO_PAD.encode(identity.cert.as_ref());
        assert_eq!(decode_server_cert(&der).unwrap(), identity.cert);
        let padded = base64::engine::general_purpose::STANDARD.encode(identity.cert.as_ref());
        assert_eq!(decode_server_cert(&padded).unwrap(), identity.cert);
        assert!(client_config(&der, Some(&identity)).is_ok());
    }

    #[test]
    fn bad_certificate_field_is_an_error() {
        assert!(matches!(
            client_config("not base64!", None),
            Err(TlsError::CertificateEncoding(_))
        ));
    }
}
