//! Benchmarks of the push path's CPU stages and of end-to-end push and restore to a
//! `file://` repository. Data is generated: bf16/fp32 "weights" (normal-ish values at a
//! typical scale), text, and random bytes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferry::chunker::{Chunker, ChunkerParams};
use ferry::codec;

const SIZE: usize = 32 << 20;

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn normal(&mut self) -> f32 {
        (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0
    }
}

fn fp32(n: usize) -> Vec<u8> {
    let mut r = SplitMix(1);
    (0..n / 4)
        .flat_map(|_| (r.normal() * 0.02).to_le_bytes())
        .collect()
}

fn bf16(n: usize) -> Vec<u8> {
    let mut r = SplitMix(2);
    (0..n / 2)
        .flat_map(|_| (((r.normal() * 0.02).to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}

fn text(n: usize) -> Vec<u8> {
    let mut r = SplitMix(3);
    let words = [
        "the", "model", "layer", "weight", "gradient", "step", "loss", "token", "{", "}", "\n",
    ];
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(words[(r.next() % words.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(n);
    out
}

fn random(n: usize) -> Vec<u8> {
    let mut r = SplitMix(4);
    (0..n / 8).flat_map(|_| r.next().to_le_bytes()).collect()
}

/// Wraps raw tensor bytes as a safetensors file of 4 MiB tensors.
fn safetensors(data: &[u8], dtype: &str) -> Vec<u8> {
    let tensor = 4 << 20;
    let mut header = String::from("{");
    for (i, start) in (0..data.len()).step_by(tensor).enumerate() {
        let end = (start + tensor).min(data.len());
        header.push_str(&format!(
            "\"t{i}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{start},{end}]}},",
            end - start
        ));
    }
    header.pop();
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn datasets() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("fp32", fp32(SIZE)),
        ("bf16", bf16(SIZE)),
        ("text", text(SIZE)),
        ("random", random(SIZE)),
    ]
}

fn chunking_and_hashing(c: &mut Criterion) {
    let data = random(SIZE);
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    g.bench_function("fastcdc-1MiB", |b| {
        b.iter(|| {
            let mut ch = Chunker::new(&data[..], ChunkerParams::default());
            let mut n = 0;
            while let Some(c) = ch.next_chunk().unwrap() {
                n += c.len();
            }
            black_box(n)
        })
    });
    g.bench_function("blake3", |b| b.iter(|| black_box(blake3::hash(&data))));
    g.finish();
}

fn codecs(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.sample_size(10);
    for (name, data) in datasets() {
        let chunk = &data[..1 << 20];
        g.throughput(Throughput::Bytes(chunk.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode-zstd1", name), chunk, |b, d| {
            b.iter(|| black_box(codec::encode(d, 1)))
        });
        let width = match name {
            "fp32" => 4,
            "bf16" => 2,
            _ => 1,
        };
        if width > 1 {
            g.bench_with_input(BenchmarkId::new("encode-planes", name), chunk, |b, d| {
                let mut enc = codec::Encoder::new(1);
                b.iter(|| black_box(enc.encode_elements(d, width)))
            });
            let planes = codec::Encoder::new(1).encode_elements(chunk, width);
            eprintln!(
                "{name}: planes stored/raw = {:.3}",
                planes.len() as f64 / chunk.len() as f64
            );
        }
        let frame = codec::encode(chunk, 1);
        let id = ferry::ids::ChunkId::of(chunk);
        g.bench_with_input(BenchmarkId::new("decode", name), &frame, |b, f| {
            b.iter(|| {
                black_box(codec::decode(f, chunk.len(), &id, &ferry::ids::Naming::PLAIN).unwrap())
            })
        });
        eprintln!(
            "{name}: stored/raw = {:.3}",
            frame.len() as f64 / chunk.len() as f64
        );
    }
    g.finish();
}

/// Client-side encryption's per-frame cost (issue 15: an encrypted repository's push and
/// restore within 15 % of a plain one): sealing and opening a 1 MiB frame, and the keyed
/// chunk id beside the plain BLAKE3 it replaces.
fn sealing(c: &mut Criterion) {
    use ferry::crypto::{Cipher, DataKey};
    let frame = random(1 << 20);
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.sample_size(10);
    for cipher in [Cipher::Aes256GcmSiv, Cipher::XChaCha20Poly1305] {
        let key = DataKey::generate(cipher);
        let sealed = key.seal(b"frame", &frame);
        let name = cipher.name();
        g.bench_function(format!("{name}-seal-1MiB"), |b| {
            b.iter(|| black_box(key.seal(b"frame", &frame)))
        });
        g.bench_function(format!("{name}-open-1MiB"), |b| {
            b.iter(|| black_box(key.open("o", b"frame", &sealed).unwrap()))
        });
    }
    let key = DataKey::generate(Cipher::DEFAULT);
    g.bench_function("keyed-chunk-id-1MiB", |b| {
        b.iter(|| black_box(key.chunk_id(&frame)))
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut g = c.benchmark_group("file-repo");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64 * 2));
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("model.safetensors"),
        safetensors(&fp32(SIZE), "F32"),
    )
    .unwrap();
    std::fs::write(
        src.path().join("model-bf16.safetensors"),
        safetensors(&bf16(SIZE), "BF16"),
    )
    .unwrap();
    let src_path = src.path().display().to_string();
    g.bench_function("push-64MiB-first", |b| {
        b.iter(|| {
            let work = tempfile::tempdir().unwrap();
            let ctx = ferry::commands::Context::new(
                work.path().join("idx"),
                ferry::progress::Reporter::silent(),
                ferry::app::Settings::from_env().unwrap(),
            );
            let repo = format!("file://{}/repo", work.path().display());
            rt.block_on(ferry::commands::push(&ctx, &src_path, &[repo], "bench"))
                .unwrap();
        })
    });
    let work = tempfile::tempdir().unwrap();
    let ctx = ferry::commands::Context::new(
        work.path().join("idx"),
        ferry::progress::Reporter::silent(),
        ferry::app::Settings::from_env().unwrap(),
    );
    let repo = format!("file://{}/repo", work.path().display());
    rt.block_on(ferry::commands::push(
        &ctx,
        &src_path,
        std::slice::from_ref(&repo),
        "bench",
    ))
    .unwrap();
    g.bench_function("restore-64MiB", |b| {
        b.iter(|| {
            let out = tempfile::tempdir().unwrap();
            rt.block_on(ferry::commands::restore(
                &ctx,
                &repo,
                "bench",
                &out.path().display().to_string(),
                Default::default(),
            ))
            .unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, chunking_and_hashing, codecs, sealing, end_to_end);
criterion_main!(benches);
