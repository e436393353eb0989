//! The operator's OCI image, assembled on this machine from a build of the operator, laid out as
//! the Dockerfile's final stage lays it out. The Dockerfile is the one source of that layout:
//! [`Layout::from_dockerfile`] reads the binary's path, the user, the ports and the entrypoint from
//! it. The Dockerfile itself cannot be built here (its base images cannot be pulled), and no musl
//! target can be installed, so the binary links glibc: the shared libraries `ldd` names go into
//! the layer at their paths. Of the distroless base, what a process needs comes along: the nonroot
//! user's /etc/passwd and /etc/group entries and a world-writable /tmp. No shell, nothing else.
//!
//! The result is an OCI image layout archive (`oci-layout`, `index.json`, `blobs/sha256/…`), as
//! `ctr images import` loads it.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where the final stage puts things, and how it runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where the binary is (the destination of the final stage's COPY).
    pub path: String,
    /// `USER`, as `uid:gid`.
    pub user: String,
    /// `EXPOSE`d TCP ports.
    pub ports: Vec<u16>,
    /// `ENTRYPOINT`, in exec form.
    pub entrypoint: Vec<String>,
}

impl Layout {
    /// The layout of the last stage of the Dockerfile `text`.
    pub fn from_dockerfile(text: &str) -> Result<Self, Error> {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let last = lines
            .iter()
            .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
            .ok_or("the Dockerfile has no FROM")?;
        let (mut path, mut user, mut ports, mut entrypoint) = (None, None, Vec::new(), None);
        for line in &lines[last + 1..] {
            let Some((instruction, rest)) = line.split_once(' ') else {
                continue;
            };
            match instruction.to_ascii_uppercase().as_str() {
                "COPY" => path = rest.split_whitespace().last().map(str::to_owned),
                "USER" => user = Some(rest.trim().to_owned()),
                "EXPOSE" => {
                    for port in rest.split_whitespace() {
                        ports.push(port.trim_end_matches("/tcp").parse()?);
                    }
                }
                "ENTRYPOINT" => entrypoint = Some(serde_json::from_str(rest.trim())?),
                _ => {}
            }
        }
        Ok(Self {
            path: path.ok_or("the final stage copies no binary")?,
            user: user.ok_or("the final stage sets no USER")?,
            ports,
            entrypoint: entrypoint.ok_or("the final stage has no exec-form ENTRYPOINT")?,
        })
    }
}

/// An assembled image.
#[derive(Debug)]
pub struct Image {
    /// The OCI image layout archive.
    pub archive: PathBuf,
    /// The name it is imported under, such as `docker.io/library/twilio-operator:dev`.
    pub reference: String,
    /// The manifest's digest (`sha256:…`).
    pub digest: String,
}

/// The shared libraries `binary` loads, by the paths the loader finds them at (the loader
/// itself included), from `ldd`.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = std::process::Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(format!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once(" => ") {
                Some((_, found)) => found.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file of the layer: where, what, and its mode.
struct Entry {
    path: String,
    data: Vec<u8>,
    mode: u32,
}

/// The layer's tar: `entries` and the directories above them, owned by root, dated 0, so the
/// same inputs give the same digest.
fn layer(entries: &[Entry]) -> Result<Vec<u8>, Error> {
    let mut dirs = std::collections::BTreeMap::new();
    dirs.insert("tmp/".to_owned(), 0o1777);
    for entry in entries {
        let mut at = String::new();
        let parts: Vec<&str> = entry.path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len() - 1] {
            at.push_str(part);
            at.push('/');
            dirs.entry(at.clone()).or_insert(0o755);
        }
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in &dirs {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(*mode);
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, dir, std::io::empty())?;
    }
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        header.set_mtime(0);
        tar.append_data(
            &mut header,
            entry.path.trim_start_matches('/'),
            entry.data.as_slice(),
        )?;
    }
    Ok(tar.into_inner()?)
}

/// Assembles `binary` into an image laid out as `layout`, named `reference`, as an archive in
/// `out_dir`.
pub fn assemble(layout: &Layout, binary: &Path, reference: &str, out_dir: &Path) -> Result<Image, Error> {
    let (uid, gid) = layout
        .user
        .split_once(':')
        .unwrap_or((&layout.user, &layout.user));
    let mut entries = vec![
        Entry {
            path: layout.path.clone(),
            data: std::fs::read(binary)?,
            mode: 0o755,
        },
        Entry {
            path: "/etc/passwd".into(),
            data: format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{uid}:{gid}:nonroot:/home/nonroot:/sbin/nologin\n").into_bytes(),
            mode: 0o644,
        },
        Entry {
            path: "/etc/group".into(),
            data: format!("root:x:0:\nnonroot:x:{gid}:\n").into_bytes(),
            mode: 0o644,
        },
    ];
    for library in shared_libraries(binary)? {
        entries.push(Entry {
            path: library.to_string_lossy().into_owned(),
            data: std::fs::read(&library)?,
            mode: 0o755,
        });
    }
    let tar = layer(&entries)?;
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    let gz = gz.finish()?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let ports: serde_json::Map<String, Value> = layout
        .ports
        .iter()
        .map(|p| (format!("{p}/tcp"), json!({})))
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": layout.user,
            "ExposedPorts": ports,
            "Entrypoint": layout.entrypoint,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))?;
    let descriptor = |media: &str, bytes: &[u8]| json!({"mediaType": media, "digest": format!("sha256:{}", sha256(bytes)), "size": bytes.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &gz)],
    }))?;
    let mut described = descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    described["annotations"] = json!({
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": reference,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [described],
    }))?;
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| -> Result<(), Error> {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        archive.append_data(&mut header, path, bytes)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for blob in [&config, &manifest, &gz] {
        add(&format!("blobs/sha256/{}", sha256(blob)), blob)?;
    }
    let path = out_dir.join(format!(
        "{}.oci.tar",
        reference
            .rsplit('/')
            .next()
            .unwrap_or(reference)
            .replace(':', "-")
    ));
    std::fs::write(&path, archive.into_inner()?)?;
    Ok(Image {
        archive: path,
        reference: reference.to_owned(),
        digest: format!("sha256:{}", sha256(&manifest)),
    })
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn reads_the_final_stage_only() {
        let text = "FROM rust AS build\nUSER root\nCOPY . .\nEXPOSE 1\n\nFROM base:nonroot\nCOPY --from=build /out /app\nUSER 65532:65532\nEXPOSE 8080 8081/tcp\nENTRYPOINT [\"/app\", \"run\"]\n";
        let layout = Layout::from_dockerfile(text).unwrap();
        assert_eq!(
            layout,
            Layout {
                path: "/app".into(),
                user: "65532:65532".into(),
                ports: vec![8080, 8081],
                entrypoint: vec!["/app".into(), "run".into()],
            }
        );
        assert!(Layout::from_dockerfile("FROM x\nCMD run\n").is_err());
    }
}
