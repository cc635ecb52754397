//! Position-stable cuts inside tensors (format version 2).

use super::tests::safetensors_file;
use super::*;

#[test]
fn fixed_tensor_cuts_line_up_by_position_and_dedup_unchanged_tensors() {
    let params = ChunkerParams::with_avg(64 * 1024).unwrap();
    let before = safetensors_file(&[(200_000, 1), (300_002, 3)]);
    // Every byte of the second tensor moves; the first does not.
    let mut after = before.clone();
    let n = after.len();
    for b in &mut after[n - 300_002..] {
        *b ^= 0x01;
    }
    let cut_fixed = |data: &[u8]| {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let cuts = TensorCuts::Fixed;
        let layout = cut_file_with(
            data,
            "m.safetensors",
            data.len() as u64,
            params,
            cuts,
            &mut buf,
            |c, w| {
                out.push((c.len(), blake3::hash(c), w));
                Ok(())
            },
        )
        .unwrap();
        (layout, out)
    };
    let (layout, a) = cut_fixed(&before);
    let (_, b) = cut_fixed(&after);
    assert_eq!(layout, Layout::Tensors);
    // Same lengths at the same positions: counterparts line up.
    let lens = |v: &[(usize, blake3::Hash, u8)]| v.iter().map(|c| c.0).collect::<Vec<_>>();
    assert_eq!(lens(&a), lens(&b));
    // Inside F32 tensors every cut is a multiple of avg_size from the tensor's start.
    let tensor: Vec<_> = a.iter().filter(|c| c.2 == 4).map(|c| c.0).collect();
    let k = 64 * 1024;
    let want = [k, k, k, 200_000 - 3 * k, k, k, k, k, 300_002 - 4 * k];
    assert_eq!(tensor, want);
    // The unchanged tensor and the header dedup exactly; the changed one does not.
    let same = a.iter().zip(&b).filter(|(x, y)| x.1 == y.1).count();
    let first_tensor = a.iter().take_while(|c| c.2 == 1).count() + 200_000usize.div_ceil(64 * 1024);
    assert_eq!(same, first_tensor);
    let total: usize = a.iter().map(|c| c.0).sum();
    assert_eq!(total, before.len());
}
