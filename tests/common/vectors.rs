//! The reference negentropy traces in tests/data/negentropy (copied from
//! shared/negentropy-vectors; see its README for the fields).

use std::io::Read;

/// One gzipped trace, as JSON.
pub fn load(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/data/negentropy/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("vector file"))
        .read_to_string(&mut text)
        .expect("gunzip");
    serde_json::from_str(&text).expect("vector JSON")
}
