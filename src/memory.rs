//! The process's memory: the glibc malloc setting that keeps a long-running daemon from
//! holding on to the large buffers each run frees, and the resident size `/metrics` exports.
//!
//! Why (issue 19, measured with `benches/soak.sh`): glibc raises its mmap threshold each time
//! it frees a mapped block, up to 32 MiB. After the first run frees its 16 MiB chunker buffer,
//! every later run's large buffers (chunker window, zstd contexts, packs) come from the
//! per-thread arenas instead, and the blocking threads that use them leave those arenas
//! fragmented and holding freed memory: the daemon of the soak went from 22 MiB to 127 MiB in
//! four minutes with about 200 KiB of live heap growth. A fixed threshold (which also turns
//! the adjustment off) gives each large buffer its own mapping, returned to the system when
//! it is freed.
//!
//! And glibc gives each thread that allocates its own arena, up to eight per core. The
//! daemon's blocking threads (object_store's file I/O, sled calls) come and go, each leaving
//! its arena part used and fragmented: measured with `benches/soak.sh 30` on 2 cores, the
//! daemon held 16 MB of anonymous memory in a dozen arenas after 14 minutes, and 9.6 MB in
//! two with at most [`ARENA_MAX`] of them (RSS 33.4 vs 26.9 MiB). Allocation here is not
//! contended enough for more arenas to pay.

/// At most this many malloc arenas (the main one included).
pub const ARENA_MAX: usize = 2;

/// Long-running processes (the daemon): allocations of at least this many bytes get a
/// mapping of their own. Above the chunk and frame sizes of small files, below the chunker's
/// window and a pack.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// One-shot commands: allocations below this many bytes (every chunk and frame) come from
/// the arenas, and freed memory stays there for the next one. Larger buffers (the chunker's
/// window, packs) keep mappings of their own: with 32 MiB here a 4 GiB push peaked at
/// 263 MiB, with 8 MiB at 182 MiB (`benches/push_rss.sh 4096`).
pub const ONE_SHOT_MMAP_THRESHOLD: usize = 8 << 20;

/// One-shot commands: free memory at the top of a heap is kept up to this many bytes
/// (with 512 MiB, the 4 GiB push above peaked at 263 MiB rather than 217 MiB).
pub const ONE_SHOT_TRIM_THRESHOLD: usize = 64 << 20;

/// How long the process runs, which decides how malloc should treat large buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// A command that exits when its work is done (push, restore, replicate, ...): its
    /// chunk-sized buffers are recycled, never returned to the system and faulted in again.
    /// Measured (`perf stat`, 1 GiB fp32 restore from a local repository): each 1–4 MiB
    /// chunk buffer in a fresh mapping cost ~430,000 page faults and 2 s of system time.
    OneShot,
    /// The daemon: large buffers get their own mappings, returned when freed, so that runs
    /// do not leave arenas holding memory (issue 19, the module's doc).
    LongRunning,
}

/// Applies [`ARENA_MAX`] and, by `lifetime`, the mmap and trim thresholds to glibc's malloc.
/// Returns false where that is not possible (another C library, another allocator in the
/// LD_PRELOAD, or not Linux): nothing else changes then. Call it once, at start, before
/// threads allocate.
pub fn tune_allocator(lifetime: Lifetime) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let (mmap, trim) = match lifetime {
            Lifetime::LongRunning => (MMAP_THRESHOLD, None),
            Lifetime::OneShot => (ONE_SHOT_MMAP_THRESHOLD, Some(ONE_SHOT_TRIM_THRESHOLD)),
        };
        // SAFETY: mallopt only changes malloc's parameters; M_MMAP_THRESHOLD takes a byte
        // count (at most 32 MiB on 64-bit), and both values are in range.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, mmap as libc::c_int) };
        // SAFETY: as above; M_TRIM_THRESHOLD takes a byte count.
        let trimmed = trim.is_none_or(
            |t| unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, t as libc::c_int) } == 1,
        );
        // SAFETY: as above; M_ARENA_MAX takes a count of arenas.
        let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX as libc::c_int) };
        ok == 1 && trimmed && arenas == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = lifetime;
        false
    }
}

/// The process's resident memory, from `VmRSS` in `/proc/self/status` (Linux; `None`
/// elsewhere or when it cannot be read). A read of a small kernel-generated file that never
/// waits on a disk: cheap enough for an async handler.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// `VmRSS:     12345 kB` → bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => n.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed_in_bytes() {
        let status = "Name:\tferry\nVmPeak:\t  99999 kB\nVmRSS:\t   16384 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vm_rss(status), Some(16384 * 1024));
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss("Name:\tferry\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_resident_memory_is_read() {
        let rss = resident_memory_bytes().unwrap();
        // A test process holds at least its code; no process here holds a terabyte.
        assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
    }

    /// malloc's state is the process's: other tests' threads free large buffers into the
    /// arenas (before any tuning) and glibc then serves later requests from those free
    /// chunks. Runs `test` alone in a fresh copy of this test binary; returns true in that
    /// copy (run the body), false in the parent (the child's result is asserted here).
    fn in_own_process(test: &str) -> bool {
        const CHILD: &str = "FERRY_MEMORY_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return true;
        }
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([test, "--exact", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} in its own process:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        false
    }

    /// After tuning, a large buffer freed and allocated again still gets its own mapping
    /// (counted in `hblkhd`), so freeing it returns it to the system. Without the fixed
    /// threshold, glibc raises it at the first free and the second buffer comes from an arena.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_buffers_stay_mapped_after_a_free() {
        if !in_own_process("memory::tests::large_buffers_stay_mapped_after_a_free") {
            return;
        }
        assert!(tune_allocator(Lifetime::LongRunning));
        let size = 16 << 20;
        for round in 0..3 {
            let buf = vec![1u8; size];
            // SAFETY: mallinfo2 only reads malloc's statistics.
            let mapped = unsafe { libc::mallinfo2() }.hblkhd;
            assert!(
                mapped >= size,
                "round {round}: a {size}-byte buffer is not in its own mapping ({mapped} bytes mapped)"
            );
            std::hint::black_box(&buf);
            drop(buf);
        }
    }

    /// After tuning, threads allocating at the same time share at most [`ARENA_MAX`] arenas
    /// (counted in `malloc_info`'s report). Untuned, each of these threads gets its own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn threads_share_at_most_arena_max_arenas() {
        if !in_own_process("memory::tests::threads_share_at_most_arena_max_arenas") {
            return;
        }
        assert!(tune_allocator(Lifetime::LongRunning));
        let threads = 8;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let done_rx = std::sync::Arc::new(std::sync::Mutex::new(done_rx));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (barrier, done_rx) = (barrier.clone(), done_rx.clone());
                std::thread::spawn(move || {
                    let held = std::hint::black_box(vec![7u8; 4096]);
                    barrier.wait();
                    let _ = done_rx.lock().map(|rx| rx.recv());
                    drop(held);
                })
            })
            .collect();
        barrier.wait();
        let arenas = arena_count();
        drop(done_tx);
        for h in handles {
            h.join().unwrap();
        }
        assert!(
            (1..=ARENA_MAX).contains(&arenas),
            "{threads} threads allocating at once use {arenas} arenas"
        );
    }

    /// The number of arenas in glibc's `malloc_info` report (`<heap nr=...>` elements).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn arena_count() -> usize {
        use std::os::fd::IntoRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("malloc_info.xml");
        let fd = std::fs::File::create(&path).unwrap().into_raw_fd();
        // SAFETY: fdopen takes ownership of a valid, open, writable descriptor; malloc_info
        // writes to the stream, fclose flushes and closes it (and the descriptor).
        unsafe {
            let stream = libc::fdopen(fd, c"w".as_ptr());
            assert!(!stream.is_null());
            assert_eq!(libc::malloc_info(0, stream), 0);
            libc::fclose(stream);
        }
        std::fs::read_to_string(&path)
            .unwrap()
            .matches("<heap nr=")
            .count()
    }
}
