//! Completion rules on real folders: markers, the latest pointer, settling and natural order.

use std::fs;
use std::time::Duration;

use super::*;
use crate::config::Config;

fn completion(marker: Option<&str>, latest: Option<&str>, settle_ms: u64) -> Completion {
    // Patterns are built by config validation; go through it.
    let mut text = String::from(
        "version = 1\n[[jobs]]\nname = \"j\"\nsource = \"/src\"\nlayout = \"steps\"\ntargets = [\"/repo\"]\nwatch = true\n",
    );
    text.push_str(&format!("settle = \"{settle_ms}ms\"\n"));
    if let Some(m) = marker {
        text.push_str(&format!("marker = \"{m}\"\n"));
    }
    if let Some(l) = latest {
        text.push_str(&format!("latest = \"{l}\"\n"));
    }
    let c = Config::from_toml(&text, "t", &crate::config::Env::from_process()).unwrap();
    match &c.jobs[0].kind {
        crate::config::JobKind::Push { complete, .. } => complete.clone(),
        _ => unreachable!(),
    }
}

fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

#[test]
fn natural_order() {
    let mut v = vec!["step-10", "step-9", "step-009a", "step-100", "a", "step-1"];
    v.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(
        v,
        ["a", "step-1", "step-9", "step-009a", "step-10", "step-100"]
    );
    assert_eq!(
        natural_cmp("global_step1000", "global_step999"),
        Ordering::Greater
    );
}

#[test]
fn scan_finds_steps_and_markers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("step-10/model.bin"), b"abc");
    write(&root.join("step-10/_SUCCESS"), b"");
    write(&root.join("step-9/model.bin"), b"ab");
    write(&root.join("step-9/sub/x.json"), b"{}");
    write(&root.join(".step-11.tmp/model.bin"), b"partial");
    write(&root.join("latest"), b"step-10\n");
    let complete = completion(Some("_SUCCESS"), None, 0);
    let s = scan(root, Layout::Steps, &complete, &HashSet::new()).unwrap();
    let items: Vec<_> = s
        .candidates
        .iter()
        .map(|c| (c.item.as_str(), c.marker))
        .collect();
    assert_eq!(items, [("step-9", false), ("step-10", true)]);
    assert_eq!(s.candidates[0].fingerprint.files, 2);
    assert_eq!(s.candidates[0].fingerprint.bytes, 4);

    let skip = HashSet::from(["step-9".to_string()]);
    let s = scan(root, Layout::Steps, &complete, &skip).unwrap();
    assert_eq!(s.candidates.len(), 1);

    let s = scan(root, Layout::Tree, &complete, &HashSet::new()).unwrap();
    assert_eq!(s.candidates.len(), 1);
    assert_eq!(s.candidates[0].item, TREE_ITEM);
    assert!(!s.candidates[0].marker, "no _SUCCESS at the root");
}

#[tokio::test(start_paused = true)]
async fn settles_only_after_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let complete = completion(Some("*.done"), None, 1000);
    let mut settler = Settler::default();
    let look = |settler: &mut Settler| {
        let s = scan(root, Layout::Steps, &complete, &HashSet::new()).unwrap();
        settler.update(&s, &complete, Instant::now())
    };

    write(&root.join("step-1/a.bin"), b"1");
    let d = look(&mut settler);
    assert!(d.ready.is_empty());
    assert_eq!(d.waiting, [("step-1".to_string(), Waiting::Marker)]);

    write(&root.join("step-1/commit.done"), b"");
    let d = look(&mut settler);
    assert_eq!(d.waiting, [("step-1".to_string(), Waiting::Settle)]);
    let recheck = d.recheck_at.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A late write (even one that keeps the old size) restarts the settle period.
    write(&root.join("step-1/a.bin"), b"2");
    filetime_bump(&root.join("step-1/a.bin"));
    let d = look(&mut settler);
    assert!(d.ready.is_empty() && d.recheck_at.unwrap() > recheck);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let d = look(&mut settler);
    assert_eq!(d.ready.len(), 1);
    assert_eq!(d.ready[0].0, "step-1");
}

/// Makes sure the mtime differs from the previous write even on coarse clocks.
fn filetime_bump(path: &Path) {
    let f = fs::File::options().write(true).open(path).unwrap();
    let t = SystemTime::now() + Duration::from_secs(5);
    f.set_times(fs::FileTimes::new().set_modified(t)).unwrap();
}

#[tokio::test(start_paused = true)]
async fn latest_pointer_releases_steps_up_to_the_one_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for step in ["global_step9", "global_step10", "global_step11"] {
        write(&root.join(step).join("w.bin"), step.as_bytes());
    }
    let complete = completion(None, Some("latest"), 0);
    let mut settler = Settler::default();
    let s = scan(root, Layout::Steps, &complete, &HashSet::new()).unwrap();
    let d = settler.update(&s, &complete, Instant::now());
    assert!(d.ready.is_empty(), "no latest file yet");
    write(&root.join("latest"), b"./global_step10\n");
    let s = scan(root, Layout::Steps, &complete, &HashSet::new()).unwrap();
    let d = settler.update(&s, &complete, Instant::now());
    let ready: Vec<_> = d.ready.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ready, ["global_step9", "global_step10"]);
    assert_eq!(d.waiting, [("global_step11".to_string(), Waiting::Latest)]);
}

#[test]
fn one_shot_completion_uses_file_times() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("old/_SUCCESS"), b"");
    let old = SystemTime::now() - Duration::from_secs(3600);
    for p in ["old/_SUCCESS", "old"] {
        let f = fs::File::open(root.join(p)).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(old)).unwrap();
    }
    write(&root.join("new/_SUCCESS"), b"");
    let complete = completion(Some("_SUCCESS"), None, 60_000);
    let s = scan(root, Layout::Steps, &complete, &HashSet::new()).unwrap();
    let (ready, waiting) = complete_now(&s, &complete);
    assert_eq!(
        ready.iter().map(|c| c.item.as_str()).collect::<Vec<_>>(),
        ["old"]
    );
    assert_eq!(waiting, [("new".to_string(), Waiting::Settle)]);
    assert!(age(&ready[0].fingerprint) >= Duration::from_secs(3599));
}
