//! Certificates made by a test: a certificate authority of its own and the certificates it
//! signs, so TLS is tested against real endpoints whose verification can really fail (an
//! untrusted signer, a certificate issued for another host). Made with the `openssl` command
//! (Debian's `openssl` package), with P-256 keys; removed when the [`TestCa`] is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate authority of a test's own, in a temporary directory.
pub struct TestCa {
    dir: PathBuf,
}

/// A certificate and its private key (PEM files, the key in PKCS#8).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (Debian's openssl package): {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

impl TestCa {
    /// A new authority (a self-signed root) named `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "bo-ca-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the test CA");
        let ca = TestCa { dir };
        let (cert, key) = (ca.dir.join("ca.pem"), ca.dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            text(&key),
            "-out",
            text(&cert),
        ]);
        ca
    }

    /// The authority's own certificate: what a client or server given it trusts.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `common_name` (PostgreSQL's `cert` authentication takes the user from
    /// it), valid for `hosts` (subject alternative names: IP addresses as such, the rest as
    /// DNS names), signed by this authority.
    pub fn issue(&self, common_name: &str, hosts: &[&str]) -> Issued {
        let stem = self.dir.join(common_name.replace(['/', ' '], "_"));
        let (cert, key, request, extensions) = (
            stem.with_extension("pem"),
            stem.with_extension("key"),
            stem.with_extension("csr"),
            stem.with_extension("ext"),
        );
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            text(&key),
            "-out",
            text(&request),
        ]);
        let names: Vec<String> = hosts
            .iter()
            .map(|host| match host.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{host}"),
                Err(_) => format!("DNS:{host}"),
            })
            .collect();
        let mut ext = String::from("basicConstraints=CA:FALSE\n");
        if !names.is_empty() {
            ext.push_str(&format!("subjectAltName={}\n", names.join(",")));
        }
        std::fs::write(&extensions, ext).expect("writing the extensions file");
        openssl(&[
            "x509",
            "-req",
            "-in",
            text(&request),
            "-CA",
            text(&self.certificate()),
            "-CAkey",
            text(&self.dir.join("ca.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            text(&extensions),
            "-out",
            text(&cert),
        ]);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600 the key");
        Issued { cert, key }
    }

    /// The directory its files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
