//! The operator's image as this machine assembles it (`twilio_sandbox::image`, for a real node):
//! laid out as the Dockerfile's final stage says, which is the layout's one source; a valid OCI
//! image layout whose digests verify; no shell; and the binary runs from the layer alone as the
//! image's non-root user.

mod support;

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use twilio_sandbox::image::{Layout, assemble, shared_libraries};

/// Every file of a tar archive, by path.
fn files(tar: impl Read) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mode = e.header().mode().unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, (mode, data))
        })
        .collect()
}

fn blob<'a>(files: &'a BTreeMap<String, (u32, Vec<u8>)>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let data = &files[&format!("blobs/sha256/{hex}")].1;
    let actual: String = Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(actual, hex, "blob {digest} does not hash to its name");
    data
}

#[test]
fn the_image_is_laid_out_as_the_dockerfile_says_and_runs_as_non_root() {
    let dockerfile = std::fs::read_to_string(support::repo_root().join("Dockerfile")).unwrap();
    let layout = Layout::from_dockerfile(&dockerfile).unwrap();
    assert_eq!(layout.path, "/twilio-operator");
    assert_eq!(layout.user, "65532:65532");
    assert_eq!(layout.entrypoint, ["/twilio-operator"]);
    // The chart's probes and scrapes reach the ports the image exposes.
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(support::repo_root().join("charts/twilio-operator/values.yaml")).unwrap(),
    )
    .unwrap();
    let chart_ports =
        [&values["metrics"]["port"], &values["health"]["port"]].map(|p| p.as_u64().unwrap() as u16);
    assert_eq!(layout.ports, chart_ports);

    let dir = tempfile::tempdir().unwrap();
    let binary = Path::new(env!("CARGO_BIN_EXE_twilio-operator"));
    let image = assemble(
        &layout,
        binary,
        "docker.io/library/twilio-operator:test",
        dir.path(),
    )
    .unwrap();
    let archive = files(std::fs::File::open(&image.archive).unwrap());
    assert_eq!(archive["oci-layout"].1, br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: Value = serde_json::from_slice(&archive["index.json"].1).unwrap();
    let described = &index["manifests"][0];
    assert_eq!(described["digest"], image.digest.as_str());
    assert_eq!(
        described["annotations"]["io.containerd.image.name"],
        "docker.io/library/twilio-operator:test"
    );
    let manifest: Value = serde_json::from_slice(blob(&archive, &image.digest)).unwrap();
    let config: Value =
        serde_json::from_slice(blob(&archive, manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/twilio-operator"])
    );
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "8081/tcp": {}})
    );
    let gz = blob(&archive, manifest["layers"][0]["digest"].as_str().unwrap());
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut tar).unwrap();
    let diff_id: String = Sha256::digest(&tar).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{diff_id}"));
    let layer = files(tar.as_slice());
    assert_eq!(layer["twilio-operator"].0, 0o755);
    assert!(
        !layer
            .keys()
            .any(|p| p.ends_with("/sh") || p.ends_with("bash") || p.starts_with("bin/")),
        "no shell in the image: {:?}",
        layer.keys().collect::<Vec<_>>()
    );
    for library in shared_libraries(binary).unwrap() {
        let path = library.to_string_lossy();
        assert!(
            layer.contains_key(path.trim_start_matches('/')),
            "{path} missing from the layer"
        );
    }

    // Run as a container would: the layer alone as the root filesystem, as the image's user.
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    tar::Archive::new(tar.as_slice()).unpack(&rootfs).unwrap();
    let ran = std::process::Command::new("chroot")
        .arg("--userspec=65532:65532")
        .arg(&rootfs)
        .args(["/twilio-operator", "--help"])
        .output()
        .expect("run chroot");
    assert!(
        ran.status.success()
            && String::from_utf8_lossy(&ran.stdout).contains("Kubernetes operator for Twilio"),
        "the binary did not run from the image's layer as 65532: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
}
