//! Generates a realistic safetensors checkpoint for benchmarks: normal-distributed weights at
//! typical scales (per-tensor standard deviations around 0.02, LayerNorm-like tensors near 1),
//! stored as F32 or BF16.
//!
//! ```sh
//! cargo run --release --example gen_weights -- OUT.safetensors SIZE_MIB f32|bf16 [SEED] [CHANGE_PERCENT]
//! ```
//! With CHANGE_PERCENT, that share of the tensors (chosen by SEED) is regenerated with a
//! different seed, as fine-tuning a few layers would: run it twice with the same SEED, once
//! with 0 and once with 10, to get a checkpoint and its successor.
//!
//! ```sh
//! cargo run --release --example gen_weights -- --series finetune|rl OUT_DIR SIZE_MIB STEPS [SEED]
//! ```
//! A series of STEPS checkpoints `OUT_DIR/step-K/model.safetensors` in which every element
//! moves, as in training: `finetune` stores F32 weights and nudges every element by a relative
//! ~1e-3 (normal) each step; `rl` keeps an F32 master, nudges it by a relative ~1.2e-4 each
//! step and stores it rounded to BF16, so about 1 % of the BF16 elements change per step.

use std::io::Write;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--series") {
        return series(&args[2..]);
    }
    if args.len() < 4 {
        eprintln!("usage: gen_weights OUT.safetensors SIZE_MIB f32|bf16 [SEED] [CHANGE_PERCENT]");
        std::process::exit(2);
    }
    let out = &args[1];
    let size: u64 = args[2].parse::<u64>()? << 20;
    let bf16 = match args[3].as_str() {
        "f32" => false,
        "bf16" => true,
        other => return Err(format!("dtype {other:?}: use f32 or bf16").into()),
    };
    let seed: u64 = args.get(4).map_or(Ok(1), |s| s.parse())?;
    let change: u64 = args.get(5).map_or(Ok(0), |s| s.parse())?;
    let elem = if bf16 { 2 } else { 4 };
    // Tensors of 4–16 MiB, like the projection matrices of a mid-size model, plus norms.
    let tensors = layout(size, elem, seed);
    let dtype = if bf16 { "BF16" } else { "F32" };
    let header = header_json(&tensors, dtype, elem);
    let off: u64 = tensors.iter().map(|(_, len)| len).sum();
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    let mut pick = Rng(seed ^ 0xC0FFEE);
    for (t, (name, len)) in tensors.iter().enumerate() {
        let changed = change > 0 && pick.next() % 100 < change;
        let mut rng =
            Rng(seed.wrapping_mul(1_000_003) + t as u64 + if changed { 7_777_777 } else { 0 });
        let norm = name.ends_with("norm.weight");
        let std = if norm { 0.05 } else { 0.01 + 0.03 * rng.unit() };
        let mean = if norm { 1.0 } else { 0.0 };
        let mut buf = Vec::with_capacity(*len as usize);
        for _ in 0..len / elem {
            let v = (mean + std * rng.normal()) as f32;
            if bf16 {
                buf.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            } else {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    eprintln!(
        "{out}: {} tensors, {} bytes of {dtype}",
        tensors.len(),
        8 + header.len() as u64 + off
    );
    Ok(())
}

/// Tensor names and byte lengths: 4–16 MiB projection matrices, each followed by a norm.
fn layout(size: u64, elem: u64, seed: u64) -> Vec<(String, u64)> {
    let mut shape_rng = Rng(seed);
    let mut tensors = Vec::new();
    let mut total = 0u64;
    let mut i = 0;
    while total < size {
        let big = (4 + shape_rng.next() % 13) << 20;
        let len = big.min(size - total).max(elem) / elem * elem;
        tensors.push((format!("model.layers.{i}.weight"), len));
        total += len;
        let norm = 4096 * elem;
        if total + norm <= size {
            tensors.push((format!("model.layers.{i}.norm.weight"), norm));
            total += norm;
        }
        i += 1;
    }
    tensors
}

fn header_json(tensors: &[(String, u64)], dtype: &str, elem: u64) -> String {
    let mut header = String::from("{");
    let mut off = 0;
    for (name, len) in tensors {
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{off},{}]}},",
            len / elem,
            off + len
        ));
        off += len;
    }
    header.pop();
    header.push('}');
    header
}

/// F32 to BF16 with round-to-nearest-even, as training frameworks cast.
fn bf16(v: f32) -> u16 {
    let b = v.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

fn series(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    if args.len() < 4 {
        eprintln!("usage: gen_weights --series finetune|rl OUT_DIR SIZE_MIB STEPS [SEED]");
        std::process::exit(2);
    }
    let rl = match args[0].as_str() {
        "finetune" => false,
        "rl" => true,
        other => return Err(format!("series {other:?}: use finetune or rl").into()),
    };
    let dir = std::path::Path::new(&args[1]);
    let size: u64 = args[2].parse::<u64>()? << 20;
    let steps: u32 = args[3].parse()?;
    let seed: u64 = args.get(4).map_or(Ok(1), |s| s.parse())?;
    let (elem, dtype, step_scale) = if rl {
        (2u64, "BF16", 1.2e-4)
    } else {
        (4u64, "F32", 1e-3)
    };
    let tensors = layout(size, elem, seed);
    let header = header_json(&tensors, dtype, elem);
    // The F32 master weights, one vector per tensor.
    let mut master: Vec<Vec<f32>> = tensors
        .iter()
        .enumerate()
        .map(|(t, (name, len))| {
            let mut rng = Rng(seed.wrapping_mul(1_000_003) + t as u64);
            let norm = name.ends_with("norm.weight");
            let std = if norm { 0.05 } else { 0.01 + 0.03 * rng.unit() };
            let mean = if norm { 1.0 } else { 0.0 };
            (0..len / elem)
                .map(|_| (mean + std * rng.normal()) as f32)
                .collect()
        })
        .collect();
    let mut nudge = Rng(seed ^ 0x05EE_D0F5_7E95);
    for step in 0..steps {
        if step > 0 {
            for w in master.iter_mut().flatten() {
                *w *= 1.0 + (step_scale * nudge.normal()) as f32;
            }
        }
        let out = dir.join(format!("step-{step}"));
        std::fs::create_dir_all(&out)?;
        let path = out.join("model.safetensors");
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(header.as_bytes())?;
        for w in &master {
            let mut buf = Vec::with_capacity(w.len() * elem as usize);
            for v in w {
                if rl {
                    buf.extend_from_slice(&bf16(*v).to_le_bytes());
                } else {
                    buf.extend_from_slice(&v.to_le_bytes());
                }
            }
            f.write_all(&buf)?;
        }
        f.flush()?;
        eprintln!("{}: {} tensors of {dtype}", path.display(), tensors.len());
    }
    Ok(())
}
