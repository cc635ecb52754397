//! `ferry demo`: generates a small fine-tuning checkpoint series, pushes each step to two
//! local repositories (fan-out), replicates one into a third, restores the last step from
//! it, checks the result byte for byte, and compares what was sent with a plain copy.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::app::Settings;
use crate::cli::render::bytes;
use crate::commands::{self, Context};

/// Tensors per generated model, and elements per tensor (bf16: 2 bytes each).
const TENSORS: usize = 8;
const ELEMENTS: usize = 1 << 20;
const STEPS: usize = 3;

/// One pushed step of the demo's checkpoint.
#[derive(Debug, Serialize)]
pub struct DemoStep {
    /// The step folder's name.
    pub step: String,
    /// Bytes of the step's files.
    pub logical_bytes: u64,
    /// What copying the folder plainly would send (its size).
    pub plain_copy_bytes: u64,
    /// What ferry uploaded to each repository.
    pub uploaded_bytes: u64,
    /// Chunks the repositories lacked.
    pub chunks_new: u64,
    /// Chunks the repositories already held.
    pub chunks_reused: u64,
}

/// What `ferry demo` did.
#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// The folder the demo works in.
    pub dir: String,
    /// The repositories pushed to, then the replica.
    pub repositories: Vec<String>,
    /// One entry per checkpoint step pushed.
    pub steps: Vec<DemoStep>,
    /// Bytes uploaded to the replica by `replicate`.
    pub replicated_bytes: u64,
    /// Whether the restored tree matched the pushed one byte for byte.
    pub restored_identical: bool,
    /// What copying every step plainly would have sent.
    pub total_plain_copy_bytes: u64,
    /// What ferry uploaded to the first repository over all steps.
    pub total_uploaded_bytes: u64,
}

/// Runs the demo in `dir` (kept), or in a temporary folder that is removed afterwards.
pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<DemoReport> {
    let keep = dir.is_some();
    let dir = dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&dir).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(dir: &Path) -> anyhow::Result<DemoReport> {
    let ctx = Context::new(
        dir.join("index"),
        crate::progress::Reporter::silent(),
        Settings::from_env()?,
    );
    let repos: Vec<String> = ["repo-a", "repo-b"]
        .iter()
        .map(|r| format!("file://{}", dir.join(r).display()))
        .collect();
    let replica = format!("file://{}", dir.join("repo-replica").display());
    // Chunks well below the 2 MiB tensors, so an unchanged tensor mostly dedups.
    for r in &repos {
        commands::init(&ctx, r, commands::new_config(Some(256 << 10), None)?).await?;
    }
    let mut rng = SplitMix(0x5eed);
    let mut tensors: Vec<Vec<u8>> = (0..TENSORS).map(|_| weights(&mut rng, ELEMENTS)).collect();
    let mut steps = Vec::new();
    let mut last = PathBuf::new();
    for step in 0..STEPS {
        if step > 0 {
            // Fine-tuning moves two of the eight tensors per step.
            for t in [step % TENSORS, (step * 3) % TENSORS] {
                tensors[t] = weights(&mut rng, ELEMENTS);
            }
        }
        let name = format!("step-{}", (step + 1) * 1000);
        let folder = dir.join("checkpoints").join(&name);
        write_checkpoint(&folder, &tensors, step)?;
        let r = commands::push(&ctx, &folder.display().to_string(), &repos, "demo-model").await?;
        steps.push(DemoStep {
            step: name,
            logical_bytes: r.bytes_total,
            plain_copy_bytes: r.bytes_total,
            uploaded_bytes: r.targets[0].stats.bytes_uploaded,
            chunks_new: r.chunks_new,
            chunks_reused: r.chunks_reused,
        });
        last = folder;
    }
    let rep = commands::replicate(&ctx, &repos[0], &replica, &[]).await?;
    let restored = dir.join("restored");
    commands::restore(
        &ctx,
        &replica,
        "demo-model",
        &restored.display().to_string(),
        Default::default(),
    )
    .await?;
    let identical = same_tree(&last, &restored)?;
    if !identical {
        anyhow::bail!("restored files differ from {}", last.display());
    }
    Ok(DemoReport {
        dir: dir.display().to_string(),
        repositories: repos.into_iter().chain([replica]).collect(),
        total_plain_copy_bytes: steps.iter().map(|s| s.plain_copy_bytes).sum(),
        total_uploaded_bytes: steps.iter().map(|s| s.uploaded_bytes).sum(),
        steps,
        replicated_bytes: rep.upload.bytes_uploaded,
        restored_identical: identical,
    })
}

/// `ferry demo`'s report as text for people.
pub fn render(r: &DemoReport) -> String {
    let mut s = format!("ferry demo in {}\n", r.dir);
    s.push_str(&format!(
        "{:<11} {:>12} {:>14} {:>10} {:>10}\n",
        "checkpoint", "plain copy", "ferry sent", "new", "reused"
    ));
    for st in &r.steps {
        s.push_str(&format!(
            "{:<11} {:>12} {:>14} {:>10} {:>10}\n",
            st.step,
            bytes(st.plain_copy_bytes),
            bytes(st.uploaded_bytes),
            st.chunks_new,
            st.chunks_reused
        ));
    }
    s.push_str(&format!(
        "total: a plain copy sends {} to each repository; ferry sent {} ({:.0}% less), to {} and {} at once\n",
        bytes(r.total_plain_copy_bytes),
        bytes(r.total_uploaded_bytes),
        100.0 * (1.0 - r.total_uploaded_bytes as f64 / r.total_plain_copy_bytes.max(1) as f64),
        r.repositories[0],
        r.repositories[1]
    ));
    s.push_str(&format!(
        "replicated {} → {}: {} sent\nrestored the last checkpoint from the replica: {}",
        r.repositories[0],
        r.repositories[2],
        bytes(r.replicated_bytes),
        if r.restored_identical {
            "byte-identical"
        } else {
            "DIFFERENT"
        }
    ));
    s
}

/// A safetensors-shaped file: 8-byte header length, JSON header, then bf16 tensors.
fn write_checkpoint(folder: &Path, tensors: &[Vec<u8>], step: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(folder)?;
    let mut header = String::from("{");
    let mut offset = 0;
    for (i, t) in tensors.iter().enumerate() {
        header.push_str(&format!(
            "\"layers.{i}.weight\":{{\"dtype\":\"BF16\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}},",
            t.len() / 2,
            offset + t.len()
        ));
        offset += t.len();
    }
    header.pop();
    header.push('}');
    let mut file = Vec::with_capacity(8 + header.len() + offset);
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(header.as_bytes());
    for t in tensors {
        file.extend_from_slice(t);
    }
    std::fs::write(folder.join("model.safetensors"), file)?;
    std::fs::write(
        folder.join("trainer_state.json"),
        format!(
            "{{\"global_step\": {}, \"learning_rate\": 2e-5}}\n",
            (step + 1) * 1000
        ),
    )?;
    Ok(())
}

/// Normal-ish values (sum of four uniforms) at a typical weight scale, as bf16 bytes.
fn weights(rng: &mut SplitMix, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 2);
    for _ in 0..n {
        let u: f32 = (0..4)
            .map(|_| (rng.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0;
        let bits = (u * 0.02).to_bits();
        out.extend_from_slice(&((bits >> 16) as u16).to_le_bytes());
    }
    out
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
}

fn same_tree(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let mut names_a: Vec<_> = std::fs::read_dir(a)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    let mut names_b: Vec<_> = std::fs::read_dir(b)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names_a.sort();
    names_b.sort();
    if names_a != names_b {
        return Ok(false);
    }
    for n in names_a {
        if std::fs::read(a.join(&n))? != std::fs::read(b.join(&n))? {
            return Ok(false);
        }
    }
    Ok(true)
}
