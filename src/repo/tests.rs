//! The repository's checks on what it reads back, each a named [`RepoError`] variant whose
//! message names the object (the messages users saw when these were all `Corrupt`).

use super::*;
use crate::chunker::ChunkerParams;
use crate::repo::config::RepoConfig;
use crate::store::Access;

/// An empty repository in an in-memory store named `name`.
pub(super) async fn memory_repo(name: &str) -> Repository {
    let url = format!("memory://{name}/repo").parse().unwrap();
    let store = Store::open_with(&url, Access::Write, &Default::default()).unwrap();
    Repository::init(
        store,
        RepoConfig::new(ChunkerParams::default(), 1 << 20),
        &Default::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn snapshots_that_fail_their_checks_are_named_variants() {
    let repo = memory_repo("corrupt-snapshots").await;
    let id = SnapshotId::of(b"the real bytes");
    let path = snapshot_path(&id);
    repo.store
        .put(&path, Bytes::from_static(b"other bytes"))
        .await
        .unwrap();
    let e = repo.read_snapshot_bytes(&id).await.unwrap_err();
    assert!(matches!(e, RepoError::ContentMismatch { .. }), "{e:?}");
    assert!(e.is_corrupt());
    let url = repo.store.object_url(&path);
    assert_eq!(
        e.to_string(),
        format!("{url}: content does not match its id")
    );

    let garbage = b"not a snapshot";
    let id = SnapshotId::of(garbage);
    repo.store
        .put(&snapshot_path(&id), Bytes::from_static(garbage))
        .await
        .unwrap();
    let e = repo.read_snapshot(&id).await.unwrap_err();
    let RepoError::BadSnapshot { object, problem } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*object, repo.store.object_url(&snapshot_path(&id)));
    assert_eq!(e.to_string(), format!("{object}: {problem}"));
    assert!(e.is_corrupt());
}

#[tokio::test]
async fn pack_indexes_that_fail_their_checks_are_named_variants() {
    let repo = memory_repo("corrupt-indexes").await;
    let (a, b) = (PackId::of(b"a"), PackId::of(b"b"));
    let index_of_a = PackIndex {
        pack: a,
        pack_size: 0,
        entries: Vec::new(),
        bases: Vec::new(),
    };
    repo.store
        .put(&index_path(&b), Bytes::from(index_of_a.encode()))
        .await
        .unwrap();
    let e = repo.read_pack_index(&b).await.unwrap_err();
    assert!(
        matches!(e, RepoError::IndexOfOtherPack { pack, .. } if pack == a),
        "{e:?}"
    );
    let url = repo.store.object_url(&index_path(&b));
    assert_eq!(e.to_string(), format!("{url}: describes pack {a} instead"));
    assert!(e.is_corrupt());

    repo.store
        .put(&index_path(&a), Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    let e = repo.read_pack_index(&a).await.unwrap_err();
    assert!(matches!(e, RepoError::BadPackIndex { .. }), "{e:?}");
    assert!(e.is_corrupt());
}

#[tokio::test]
async fn a_ref_entry_away_from_its_home_is_a_named_variant() {
    let repo = memory_repo("corrupt-refs").await;
    let entry = repo
        .advance_ref("model", SnapshotId::of(b"s"))
        .await
        .unwrap();
    let (bytes, _) = repo
        .read_ref_entry(&ref_path("model", entry.seq))
        .await
        .unwrap();
    let moved = ref_path("model", entry.seq + 1);
    repo.store.put(&moved, bytes).await.unwrap();
    let e = repo.ref_entry("model", entry.seq + 1).await.unwrap_err();
    assert!(matches!(e, RepoError::RefEntryNotAtHome { .. }), "{e:?}");
    let (url, home) = (
        repo.store.object_url(&moved),
        repo.store.object_url(&ref_path("model", entry.seq)),
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{url}: entry for ref \"model\" seq {} belongs at {home}",
            entry.seq
        )
    );
    let e = repo.read_ref_entry(&moved).await.unwrap_err();
    assert!(matches!(e, RepoError::RefEntryNotAtHome { .. }), "{e:?}");

    repo.store
        .put(&ref_path("other", 1), Bytes::from_static(b"garbage"))
        .await
        .unwrap();
    let e = repo.ref_entry("other", 1).await.unwrap_err();
    assert!(matches!(e, RepoError::BadRefEntry { .. }), "{e:?}");
    assert!(e.is_corrupt());
    assert!(!RepoError::NotARepo { url: "x".into() }.is_corrupt());
}

#[tokio::test]
async fn sharded_runs_records_that_fail_their_checks_are_named_variants() {
    let repo = memory_repo("corrupt-records").await;
    let path = Path::from("replicas/run-1/plan");
    repo.store
        .put(&path, Bytes::from_static(b"{"))
        .await
        .unwrap();
    let e = repo.read_replica_plan("run-1").await.unwrap_err();
    let RepoError::BadRecord {
        object, problem, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(
        e.to_string(),
        format!("{object}: invalid replica plan: {problem}")
    );
    assert!(e.is_corrupt());
    let e = repo.misplaced(&path, "plan", "run");
    let url = repo.store.object_url(&path);
    assert_eq!(
        e.to_string(),
        format!("{url}: plan stored under the wrong run")
    );
    assert!(e.is_corrupt() && repo.vanished(&path).is_corrupt());
}

#[tokio::test]
async fn a_plan_naming_an_invalid_ref_is_a_named_variant() {
    let repo = memory_repo("corrupt-plan-ref").await;
    let path = Path::from("replicas/run-1/plan");
    let plan = br#"{"run":"run-1","of":2,"from":"src","refs":[{"name":"../x","snapshots":[]}]}"#;
    repo.store
        .put(&path, Bytes::from_static(plan))
        .await
        .unwrap();
    let e = repo.read_replica_plan("run-1").await.unwrap_err();
    let RepoError::BadRefNameIn { object, name } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(
        (object.as_str(), name.as_str()),
        (repo.store.object_url(&path).as_str(), "../x")
    );
    assert_eq!(
        e.to_string(),
        format!("{object}: invalid ref name \"../x\": use letters, digits, '.', '_' and '-' (not starting with '.')")
    );
    assert!(e.is_corrupt());
}

/// Frames that do not give back their chunk keep the words restore and verify printed when
/// they were free text.
#[test]
fn chunk_frame_problems_are_named_variants() {
    use crate::codec::FrameError;
    use crate::ids::ChunkId;
    let (chunk, base) = (ChunkId([1; 32]), ChunkId([2; 32]));
    let object = "file:///r/packs/ab/abcd".to_string();
    let cases = [
        (
            RepoError::ChunkNotIndexed {
                object: "file:///r".into(),
                chunk,
            },
            format!("file:///r: chunk {chunk} is referenced but no pack index holds it"),
        ),
        (
            RepoError::BadFrame {
                object: object.clone(),
                chunk,
                offset: 12,
                problem: Box::new(FrameError::Empty),
            },
            format!("{object}: chunk {chunk} at offset 12: empty frame"),
        ),
        (
            RepoError::BadDelta {
                object: object.clone(),
                chunk,
                offset: 12,
                base,
                problem: Box::new(FrameError::Empty),
            },
            format!("{object}: chunk {chunk} at offset 12, a delta against base chunk {base}: empty frame"),
        ),
    ];
    for (e, want) in cases {
        assert_eq!(e.to_string(), want);
        assert!(e.is_corrupt(), "{e:?}");
    }
}

/// An encrypted repository in memory: opens with its key only (none: `KeyNeeded`; another:
/// `WrongKey`), seals what it writes (the snapshot object is not the snapshot's bytes, its id
/// is keyed), opens it back, and a repository replicated from it shares the data key.
#[tokio::test]
async fn an_encrypted_repository_opens_with_its_key_only() {
    use crate::crypto::{Cipher, CryptoError, Keyring, UserKey};
    let url: crate::store::StoreUrl = "memory://encrypted/repo".parse().unwrap();
    let store = || Store::open_with(&url, Access::Write, &Default::default()).unwrap();
    let key = Keyring::new(vec![UserKey::from_bytes([7; 32])]);
    let other = Keyring::new(vec![UserKey::from_bytes([8; 32])]);
    let config = RepoConfig::new(ChunkerParams::default(), 1 << 20).encrypted();
    let e = Repository::init(store(), config.clone(), &Keyring::default())
        .await
        .unwrap_err();
    assert!(matches!(e, RepoError::NoKeyToEncrypt), "{e:?}");
    let repo = Repository::init(store(), config, &key).await.unwrap();
    assert!(repo.sealing().is_encrypted() && repo.naming().is_keyed());

    let encoded = Bytes::from_static(b"a snapshot's encoded bytes");
    let id = repo.write_snapshot_bytes(encoded.clone()).await.unwrap();
    assert_ne!(id, SnapshotId::of(&encoded), "the id is keyed");
    let stored = repo.store.get(&snapshot_path(&id)).await.unwrap();
    assert!(
        !stored.windows(8).any(|w| w == &encoded[..8]),
        "stored unsealed"
    );
    assert_eq!(stored[0], 2, "AES-256-GCM-SIV's sealing version");
    assert_eq!(repo.read_snapshot_bytes(&id).await.unwrap(), encoded);

    let none = Repository::open(store(), &Keyring::default())
        .await
        .unwrap_err();
    assert!(matches!(none, RepoError::KeyNeeded { .. }), "{none:?}");
    let wrong = Repository::open(store(), &other).await.unwrap_err();
    assert!(
        matches!(wrong, RepoError::Crypto(CryptoError::WrongKey { .. })),
        "{wrong:?}"
    );
    assert!(wrong
        .to_string()
        .contains("the key does not open this repository"));
    let again = Repository::open(store(), &key).await.unwrap();
    assert_eq!(again.read_snapshot_bytes(&id).await.unwrap(), encoded);

    // A replica made to share the data key seals alike; a new repository does not.
    let replica_url: crate::store::StoreUrl = "memory://encrypted/replica".parse().unwrap();
    let replica_store = Store::open_with(&replica_url, Access::Write, &Default::default()).unwrap();
    let share = repo.sealing().data_key().cloned();
    let (replica, created) =
        Repository::open_or_init(replica_store, &key, (|| repo.config().derived(), share))
            .await
            .unwrap();
    assert!(created && replica.sealing().same_as(repo.sealing()));
    assert_eq!(replica.naming(), repo.naming());
    let fresh_url: crate::store::StoreUrl = "memory://encrypted/fresh".parse().unwrap();
    let fresh_store = Store::open_with(&fresh_url, Access::Write, &Default::default()).unwrap();
    let fresh = Repository::init(fresh_store, repo.config().derived(), &key)
        .await
        .unwrap();
    assert!(!fresh.sealing().same_as(repo.sealing()));
    assert_eq!(repo.config().cipher(), Some(Cipher::Aes256GcmSiv));

    // A repository sealed with the first cipher (XChaCha20-Poly1305) opens and reads with
    // it; a repository made to share its data key takes its cipher, whatever its config said.
    let old_url: crate::store::StoreUrl = "memory://encrypted/xchacha".parse().unwrap();
    let old_store = || Store::open_with(&old_url, Access::Write, &Default::default()).unwrap();
    let old_config = RepoConfig::new(ChunkerParams::default(), 1 << 20)
        .encrypted_with(Cipher::XChaCha20Poly1305);
    let old = Repository::init(old_store(), old_config, &key)
        .await
        .unwrap();
    let id = old.write_snapshot_bytes(encoded.clone()).await.unwrap();
    let stored = old.store.get(&snapshot_path(&id)).await.unwrap();
    assert_eq!(stored[0], 1, "XChaCha20-Poly1305's sealing version");
    let old = Repository::open(old_store(), &key).await.unwrap();
    assert_eq!(old.read_snapshot_bytes(&id).await.unwrap(), encoded);
    let copy_url: crate::store::StoreUrl = "memory://encrypted/xchacha-copy".parse().unwrap();
    let copy_store = Store::open_with(&copy_url, Access::Write, &Default::default()).unwrap();
    let share = old.sealing().data_key().cloned();
    let (copy, _) = Repository::open_or_init(
        copy_store,
        &key,
        (
            || RepoConfig::new(ChunkerParams::default(), 1 << 20).encrypted(),
            share,
        ),
    )
    .await
    .unwrap();
    assert_eq!(copy.config().cipher(), Some(Cipher::XChaCha20Poly1305));
    assert!(copy.sealing().same_as(old.sealing()));
}
