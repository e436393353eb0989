//! Writes the CRDs generated from the Rust types into `crds/` (for `kubectl apply -f crds/`)
//! and into the chart's `files/crds/` (rendered as templates, so `helm upgrade` updates them).
//! An argument names another repository root.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".to_owned()));
    for dir in twilio_operator::crds::DIRECTORIES {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in twilio_operator::crds::rendered() {
            let path = dir.join(name);
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
