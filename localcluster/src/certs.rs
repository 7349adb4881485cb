//! A local certificate authority for `make dev` and the tests: one CA, and
//! certificates for each role, written as PEM files.
//!
//! Roles and the names they carry (see `globallock_tls::identity`):
//! - a coordinator: `coordinator.globallock`, plus `localhost` and `127.0.0.1`
//!   (clients dial it by address);
//! - the agent of region `R`: `R.agent.globallock`, plus `localhost` and
//!   `127.0.0.1`;
//! - a client: a SPIFFE-style URI naming the caller;
//! - a member of region `R`'s etcd clusters: `R.etcd.globallock`, plus
//!   `localhost` and `127.0.0.1` (peers check each other's address).
//!
//! Each region's etcd has a CA of its own, which issues only its members'
//! certificates and its agent's client certificate: etcd's
//! `--client-cert-auth` then admits that agent and nobody else.

use std::path::{Path, PathBuf};

pub use globallock_tls::TlsFiles;
use globallock_tls::identity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters.
    #[error("cannot make a certificate")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A CA whose certificates are written under one directory.
pub struct DevCa {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A coordinator (serves clients, calls agents).
    Coordinator,
    /// The agent of this region.
    Agent(String),
    /// A caller named by this URI.
    Client(String),
    /// A member of one of this region's etcd clusters (server and peer).
    Etcd(String),
}

impl DevCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn create(dir: &Path, name: &str) -> Result<Self, CertError> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("globallock {name} CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write(&dir.join(format!("{name}-ca.pem")), &cert.pem())?;
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Issue a certificate for `role` into `dir/<file>.pem` and `.key`
    /// (`expired`: one whose validity ended long ago), and name the files.
    pub fn issue(&self, role: &Role, file: &str, expired: bool) -> Result<TlsFiles, CertError> {
        self.issue_naming(role, file, expired, &[])
    }

    /// Like [`DevCa::issue`], the certificate also carrying the DNS names
    /// `extra` (e.g. the SRV target names clients dial a coordinator by).
    pub fn issue_naming(
        &self,
        role: &Role,
        file: &str,
        expired: bool,
        extra: &[&str],
    ) -> Result<TlsFiles, CertError> {
        let (common, mut names, uri) = match role {
            Role::Coordinator => ("coordinator", vec![identity::COORDINATOR.to_owned()], None),
            Role::Agent(region) => ("agent", vec![identity::agent(region)], None),
            Role::Client(uri) => ("client", Vec::new(), Some(uri.clone())),
            Role::Etcd(region) => ("etcd", vec![identity::etcd(region)], None),
        };
        if uri.is_none() {
            names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        }
        names.extend(extra.iter().map(|name| (*name).to_owned()));
        let mut params = CertificateParams::new(names)?;
        if let Some(uri) = uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, format!("globallock {common}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = TlsFiles {
            ca: self.ca_file(),
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| CertError::Write {
                path: files.key.clone(),
                source,
            },
        )?;
        Ok(files)
    }
}

fn write(path: &Path, text: &str) -> Result<(), CertError> {
    // Written beside, then renamed: a reloading reader never sees half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| CertError::Write {
            path: path.to_owned(),
            source,
        })
}
