//! The application layer end to end on local folders: typed inputs in, reports out.

use std::sync::Arc;

use super::*;

fn local(p: &std::path::Path) -> StoreUrl {
    StoreUrl::Local(p.to_path_buf())
}

/// Records the phases and byte counts an operation reports.
#[derive(Default)]
struct Seen(std::sync::Mutex<(Vec<(String, u64)>, u64)>);

impl Seen {
    /// The phases (label, total) and bytes seen since the last call.
    fn take(&self) -> (Vec<(String, u64)>, u64) {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl crate::progress::Observer for Seen {
    fn start(&self, label: &str, total: u64) {
        self.0.lock().unwrap().0.push((label.to_string(), total));
    }
    fn inc(&self, n: u64) {
        self.0.lock().unwrap().1 += n;
    }
}

/// More repositories than the old 64-bit target mask held: every one gets every chunk, and
/// each one's snapshot restores byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_fans_out_to_more_than_64_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(src.join("weights.bin"), &data).unwrap();
    let repos: Vec<StoreUrl> = (0..66)
        .map(|i| local(&dir.path().join(format!("repo-{i}"))))
        .collect();
    let app = App::new(dir.path().join("index"), Settings::default());
    let name = RefName::parse("model").unwrap();
    let seen = Arc::new(Seen::default());
    let report = app
        .push(
            &local(&src),
            &repos,
            &name,
            &PushMode::Replace,
            PushOptions::default(),
            &Reporter::observed(seen.clone()),
        )
        .await
        .unwrap();
    // The push's byte counts reach the reporter the caller passed (the daemon's run counter).
    let size = data.len() as u64;
    assert_eq!(seen.take(), (vec![("push".to_string(), size)], size));
    assert_eq!(report.targets.len(), 66);
    let first = &report.targets[0];
    for t in &report.targets {
        assert!(t.created);
        assert_eq!(t.snapshot, first.snapshot, "{}", t.repo);
        assert_eq!(t.stats.chunks_new, first.stats.chunks_new, "{}", t.repo);
        assert!(t.stats.bytes_uploaded > 0, "{}", t.repo);
    }
    for i in [63, 64, 65] {
        let out = dir.path().join(format!("out-{i}"));
        let r = app
            .restore(
                &repos[i],
                "model",
                &local(&out),
                RestoreOptions::default(),
                &Reporter::observed(seen.clone()),
            )
            .await
            .unwrap();
        assert_eq!(seen.take(), (vec![("restore".to_string(), size)], size));
        assert_eq!(r.files, 1);
        assert_eq!(std::fs::read(out.join("weights.bin")).unwrap(), data);
    }
}

#[tokio::test]
async fn a_repository_inside_its_source_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::new(dir.path().join("index"), Settings::default());
    let repo = dir.path().join("repo");
    let e = app
        .push(
            &local(dir.path()),
            &[local(&repo)],
            &RefName::parse("x").unwrap(),
            &PushMode::Replace,
            PushOptions::default(),
            &Reporter::silent(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("one is inside the other"), "{e}");
    assert!(!repo.exists());
}

/// The settings given to `App::new` are the ones its stores use (not the environment's): a
/// fault rate of 1 fails `init` on a store that works with the defaults.
#[tokio::test]
async fn stores_are_opened_with_the_apps_settings() {
    let dir = tempfile::tempdir().unwrap();
    let url: StoreUrl = "memory://app-settings/repo".parse().unwrap();
    let faults = crate::store::fault::FaultConfig {
        rate: 1.0,
        seed: 7,
        max_latency: Duration::ZERO,
        fail_first: 0,
    };
    let failing = Settings {
        store: crate::store::StoreOptions {
            faults: Some(faults),
            ..Default::default()
        },
        ..Default::default()
    };
    let app = App::new(dir.path().join("index"), failing);
    let config = RepoConfig::new(ChunkerParams::default(), DEFAULT_PACK_SIZE);
    let err = app.init(&url, config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("injected fault"), "{err}");

    let app = App::new(dir.path().join("index"), Settings::default());
    let report = app.init(&url, config).await.unwrap();
    assert_eq!(report.repo, url.to_string());
}
