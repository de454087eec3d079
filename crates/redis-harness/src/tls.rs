//! Throwaway certificates for TLS tests: a certificate authority made with the `openssl` command
//! in a temp dir, and server certificates it signs for `127.0.0.1` and `localhost`. Nothing is
//! committed; the keys live as long as the [`TestCa`].

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use tempfile::TempDir;

use crate::binaries::{OPENSSL, OPENSSL_HINT, require_openssl};
use crate::server::path;

/// Days the certificates are valid: a test run needs minutes, and a short validity keeps them
/// useless afterwards.
const VALID_DAYS: &str = "2";

/// A certificate authority made for one test: its certificate (to give a client as
/// `SSL_CERT_FILE`) and its key (to sign server certificates), in a temp dir removed on drop.
#[derive(Debug)]
pub struct TestCa {
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

/// A server certificate signed by a [`TestCa`], with its key and the CA's certificate: what
/// `redis-server --tls-cert-file --tls-key-file --tls-ca-cert-file` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCert {
    /// The server's certificate (PEM), for `127.0.0.1` and `localhost`.
    pub cert: PathBuf,
    /// Its private key (PEM, unencrypted).
    pub key: PathBuf,
    /// The certificate of the CA that signed it (PEM).
    pub ca_cert: PathBuf,
}

impl TestCa {
    /// Makes a new CA (an EC P-256 key and a self-signed CA certificate named `common_name`) in a
    /// fresh temp dir.
    ///
    /// # Panics
    /// When `openssl` is not on `PATH` (with how to install it) or fails (with its output).
    #[must_use]
    pub fn generate(common_name: &str) -> Self {
        require_openssl();
        let dir = tempfile::Builder::new()
            .prefix("redis-harness-ca-")
            .tempdir()
            .unwrap_or_else(|err| panic!("could not create a temp dir for a test CA: {err}"));
        let cert = dir.path().join("ca.crt");
        let key = dir.path().join("ca.key");
        req_new_ec_key(
            true,
            &key,
            &cert,
            &[
                "-days",
                VALID_DAYS,
                "-subj",
                &format!("/CN={common_name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Self { dir, cert, key }
    }

    /// The CA's certificate (PEM): a client that trusts it (e.g. through `SSL_CERT_FILE`)
    /// accepts the server certificates this CA signs.
    #[must_use]
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// A new server certificate and key for `127.0.0.1` and `localhost` (subject alternative
    /// names), signed by this CA. It is good for client authentication too: the nodes of a
    /// cluster with `--tls-cluster yes` present it to each other on the cluster bus.
    ///
    /// # Panics
    /// When `openssl` fails, with its output.
    #[must_use]
    pub fn issue_server_cert(&self) -> ServerCert {
        static ISSUED: AtomicUsize = AtomicUsize::new(0);
        let n = ISSUED.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.path();
        let (key, csr, cert, ext) = (
            dir.join(format!("server-{n}.key")),
            dir.join(format!("server-{n}.csr")),
            dir.join(format!("server-{n}.crt")),
            dir.join(format!("server-{n}.ext")),
        );
        req_new_ec_key(false, &key, &csr, &["-subj", "/CN=localhost"]);
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap_or_else(|err| panic!("could not write {}: {err}", ext.display()));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&self.cert),
            "-CAkey",
            &path(&self.key),
            "-set_serial",
            &(1000 + n).to_string(),
            "-out",
            &path(&cert),
            "-days",
            VALID_DAYS,
            "-extfile",
            &path(&ext),
        ]);
        ServerCert { cert, key, ca_cert: self.cert.clone() }
    }
}

/// `openssl req` with a new, unencrypted EC P-256 key written to `key`, and `out` written: a
/// self-signed certificate when `x509`, else a signing request; `extra` arguments after.
fn req_new_ec_key(x509: bool, key: &Path, out: &Path, extra: &[&str]) {
    let (key, out) = (path(key), path(out));
    let mut args = vec!["req"];
    if x509 {
        args.push("-x509");
    }
    args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]);
    args.extend(["-keyout", key.as_str(), "-out", out.as_str()]);
    args.extend_from_slice(extra);
    openssl(&args);
}

/// Runs `openssl args`, panicking with its output unless it succeeds.
fn openssl(args: &[&str]) {
    let output = Command::new(OPENSSL).args(args).stdin(Stdio::null()).output().unwrap_or_else(|err| {
        if err.kind() == io::ErrorKind::NotFound {
            panic!("{OPENSSL_HINT}");
        }
        panic!("could not run openssl: {err}");
    });
    assert!(
        output.status.success(),
        "openssl {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
