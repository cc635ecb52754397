//! The `ferry` binary's command line (clap): every command, argument and help text. Part of
//! the binary (`main.rs` includes it); the value parsers are in `main.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{parse_bind, parse_cipher, parse_duration, parse_size};

/// Keep ML checkpoints and datasets in sync between S3, Azure Blob, Google Cloud Storage and
/// local disks, sending only what changed.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Where the local index (a rebuildable cache) lives.
    #[arg(long, global = true, env = "FERRY_INDEX_DIR")]
    pub(crate) index_dir: Option<PathBuf>,
    /// Print one JSON summary on stdout instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// A key file for encrypted repositories (repeatable: each repository opens with the key
    /// it was made or rotated with). FERRY_KEY_FILE names one more, FERRY_KEY holds one.
    #[arg(long = "key-file", global = true, value_name = "PATH")]
    pub(crate) key_files: Vec<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--dry-run` and its price on push and replicate.
#[derive(clap::Args, Debug, Clone, Copy)]
pub(crate) struct DryRunArgs {
    /// Forecast the bytes the run would send and estimate their egress cost; write nothing
    /// to any store (not with --merge or --shard).
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// With --dry-run: the price in US dollars per GiB sent, for every route (over the
    /// built-in table and FERRY_EGRESS_PRICES).
    #[arg(long, value_name = "USD", requires = "dry_run")]
    pub(crate) price_per_gib: Option<f64>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a repository at an empty location.
    Init {
        /// Where the repository goes: a folder, file:///path, s3://bucket/prefix,
        /// az://container/prefix or gs://bucket/prefix.
        repo: String,
        /// Average chunk size (power of two, 1KiB–4MiB). Fixed for the repository's life.
        #[arg(long, value_parser = parse_size)]
        chunk_avg: Option<u64>,
        /// Target pack object size (1MiB–1GiB).
        #[arg(long, value_parser = parse_size)]
        pack_size: Option<u64>,
        /// Store changed tensor chunks as element deltas against the previous push of the
        /// same ref, at most N deltas deep before a full frame (format version 2; 0: off).
        /// Older ferry versions cannot read such a repository.
        #[arg(long, value_name = "N")]
        deltas: Option<u8>,
        /// Encrypt everything the repository stores (format version 3), under a new data key
        /// wrapped under the key of --key-file (or FERRY_KEY_FILE / FERRY_KEY). For the
        /// repository's life; every command on it then needs that key.
        #[arg(long)]
        encrypt: bool,
        /// The AEAD that seals an encrypted repository: aes256gcmsiv (the default; fastest
        /// where the CPU has AES instructions) or xchacha20poly1305 (fastest without them).
        #[arg(long, requires = "encrypt", value_parser = parse_cipher)]
        cipher: Option<ferry::crypto::Cipher>,
    },
    /// Push a folder, file or object prefix into one or more repositories.
    Push {
        /// What to push: a folder, a file, or an object prefix (s3://…, az://…, gs://…).
        source: String,
        /// One or more repositories (created when the location is empty); none may lie
        /// inside the source.
        #[arg(required = true)]
        repos: Vec<String>,
        /// The ref to move to the new snapshot.
        #[arg(long)]
        name: String,
        /// Add the tree's files to the ref's head instead of replacing its tree (many writers
        /// pushing different files into one ref).
        #[arg(long, conflicts_with = "shard")]
        merge: bool,
        /// Push only shard I of N (paths hashed with BLAKE3) as a partial snapshot; the last
        /// shard to finish combines the partials and moves the ref. Needs --run.
        #[arg(long, value_name = "I/N", requires = "run")]
        shard: Option<ferry::ops::shard::Shard>,
        /// The id every shard of one sharded push shares (e.g. the Job's uid). Ignored
        /// without --shard.
        #[arg(long, env = "FERRY_RUN")]
        run: Option<String>,
        /// Read and hash every file, even those the local index says are unchanged (size,
        /// mtime, ctime and inode as recorded).
        #[arg(long)]
        rehash: bool,
        /// On a repository with deltas: chain this push's deltas at most N deep, at most the
        /// repository's `init --deltas`; 0 stores every changed chunk whole (a keyframe that
        /// later pushes' deltas rest on, so restores of them read less).
        #[arg(long, value_name = "N")]
        deltas: Option<u8>,
        #[command(flatten)]
        limit: Limit,
        #[command(flatten)]
        dry: DryRunArgs,
    },
    /// Combine a sharded push's partial snapshots and move the ref, if every shard finished.
    Commit {
        /// The repositories the shards pushed to.
        #[arg(required = true)]
        repos: Vec<String>,
        /// The ref the shards pushed to.
        #[arg(long)]
        name: String,
        /// The run id the shards were given.
        #[arg(long, env = "FERRY_RUN")]
        run: String,
    },
    /// Rebuild a snapshot's files, byte-identical, in a folder or under an object prefix.
    Restore {
        /// The repository to read.
        repo: String,
        /// NAME, NAME@SEQ or NAME@SNAPSHOT-ID-PREFIX.
        snapshot: String,
        /// Where the files go: a folder (created if missing) or an object prefix.
        dest: String,
        /// Files already at the destination: `never` keeps them, `changed` replaces those
        /// whose content differs (identical ones are not rewritten), `always` rewrites all.
        /// Replaced and kept files are listed.
        #[arg(long, default_value = "changed", value_name = "never|changed|always")]
        overwrite: ferry::ops::restore::Overwrite,
        /// Apply setuid/setgid bits recorded in the snapshot (dropped by default).
        #[arg(long)]
        preserve_special_modes: bool,
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        limit: Limit,
    },
    /// Fetch a snapshot into DIR/versions/ and point DIR/current at it atomically: only chunks
    /// that earlier versions in DIR lack are read from the store (the serving side).
    Pull {
        /// The repository to read.
        repo: String,
        /// NAME (its latest snapshot), NAME@SEQ or NAME@SNAPSHOT-ID-PREFIX.
        snapshot: String,
        /// The serving folder: DIR/current -> versions/<seq>-<id>, the versions beside it.
        dir: std::path::PathBuf,
        /// Complete versions kept, the live one included (older ones are removed).
        #[arg(long, default_value_t = 2, value_name = "N")]
        keep: usize,
        /// Apply setuid/setgid bits recorded in the snapshot (dropped by default).
        #[arg(long)]
        preserve_special_modes: bool,
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        limit: Limit,
        #[command(flatten)]
        dry: DryRunArgs,
    },
    /// Copy snapshots and the chunks the target lacks from one repository to another.
    Replicate {
        /// The repository to copy from.
        from: String,
        /// The repository to copy to (created when the location is empty).
        to: String,
        /// Only this ref (default: all refs).
        #[arg(long)]
        name: Vec<String>,
        /// Copy only the chunks of shard I of N (chunk ids hashed); the last shard to finish
        /// writes the snapshots and moves the refs. Needs --run.
        #[arg(long, value_name = "I/N", requires = "run")]
        shard: Option<ferry::ops::shard::Shard>,
        /// The id every shard of one sharded replication shares. Ignored without --shard.
        #[arg(long, env = "FERRY_RUN")]
        run: Option<String>,
        #[command(flatten)]
        limit: Limit,
        #[command(flatten)]
        dry: DryRunArgs,
    },
    /// List snapshots, for every ref or one.
    Snapshots {
        /// The repository to list.
        repo: String,
        /// Only this ref.
        name: Option<String>,
    },
    /// List the entries of a snapshot: kind, mode, size, path (and a symlink's target).
    Ls {
        /// The repository to read.
        repo: String,
        /// NAME, NAME@SEQ or NAME@SNAPSHOT-ID-PREFIX.
        snapshot: String,
    },
    /// Check a repository's structure; with --read-data, re-hash every chunk. With
    /// --mirror SOURCE DEST, compare a mirror's objects with their source files instead.
    Verify {
        /// The repository to check.
        #[arg(required_unless_present = "mirror")]
        repo: Option<String>,
        /// Re-hash every chunk (a repository) or every mirrored object's bytes (--mirror).
        #[arg(long)]
        read_data: bool,
        /// Compare each source file's BLAKE3 with the mirrored object's (its ferry_blake3
        /// metadata on S3 and Azure, its bytes elsewhere).
        #[arg(long, num_args = 2, value_names = ["SOURCE", "DEST"], conflicts_with = "repo")]
        mirror: Option<Vec<String>>,
    },
    /// Make DEST hold the same plain objects as SOURCE (a folder or object prefix), sending
    /// only changed parts of changed files (Azure block lists, S3 part copies).
    Mirror {
        /// A local folder or an object prefix (s3://bucket/prefix, az://container/prefix,
        /// gs://bucket/prefix).
        source: String,
        /// Where the plain objects go: s3://bucket/prefix, az://container/prefix,
        /// gs://bucket/prefix (whole objects) or a folder.
        dest: String,
        /// Also remove objects under DEST that SOURCE no longer has.
        #[arg(long)]
        delete: bool,
        /// Print what would move, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Read and hash every source file, even those the local index says are unchanged.
        #[arg(long)]
        rehash: bool,
        /// Mirror SOURCE even when it holds an encrypted ferry repository (its objects are
        /// ciphertext; to publish plain files, `ferry restore` a snapshot instead).
        #[arg(long)]
        allow_encrypted_source: bool,
        #[command(flatten)]
        limit: Limit,
    },
    /// Check a daemon config file exactly as `ferry daemon` loads it.
    CheckConfig {
        /// The config file (default: the built-in config/local.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the configured jobs once and exit non-zero if any failed (for cron and schedulers);
    /// exit 3 when nothing was pushed because nothing had settled (still changing).
    Sync {
        /// The config file whose jobs to run.
        #[arg(long)]
        config: PathBuf,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// Watch, schedule and replicate as configured; serve the dashboard, API and /metrics.
    Daemon {
        /// The config file (default: the built-in config/local.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen here instead of server.bind: IP:PORT or HOST:PORT, e.g. localhost:7878
        /// (port 0 picks a free port).
        #[arg(long, value_parser = parse_bind)]
        bind: Option<std::net::SocketAddr>,
        /// Testing: run the schedule clock from this time, optionally faster (TIME[@SPEED]).
        #[arg(long, hide = true)]
        fake_clock: Option<String>,
    },
    /// Show each job's targets: state, last success, lag, bytes, savings.
    Status {
        /// The config file (default: the built-in config/local.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The daemon's address (default: the config's server.bind).
        #[arg(long)]
        url: Option<String>,
    },
    /// Trim a ref's history; the snapshots it no longer names are reclaimed by `gc`.
    Forget {
        /// The repository holding the ref.
        repo: String,
        /// The ref whose history to trim.
        name: String,
        /// Keep the newest N snapshots (at least 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        keep_last: u64,
        /// Also keep every snapshot whose sequence number is a multiple of N.
        #[arg(long)]
        keep_every: Option<u64>,
        /// Delete the ref itself: forget every snapshot in its history.
        #[arg(long, conflicts_with_all = ["keep_last", "keep_every"])]
        delete_ref: bool,
        /// Show what would be forgotten, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-read every pack and mark damaged ones (`bad/<pack id>`): the next push uploads their
    /// chunks anew and gc deletes them once no snapshot needs them.
    Repair {
        /// The repository to check and mark.
        repo: String,
        /// Report damaged packs, mark nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete packs and snapshots no ref needs (two-phase, safe alongside pushes).
    Gc {
        /// The repository to clean.
        repo: String,
        /// Age a pack must reach before it is marked, and a mark before the pack is deleted.
        /// Must exceed your longest push.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        grace: std::time::Duration,
        /// Show what would be deleted, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Generate a small checkpoint series and show push, replicate and restore on local repositories.
    Demo {
        /// Work folder (default: a new temporary folder, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Client-side encryption keys.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
}

/// `ferry key …`.
#[derive(Subcommand)]
pub(crate) enum KeyAction {
    /// Write a new random key to a new file PATH, readable by its owner only (an existing file
    /// is never overwritten). Keep a copy somewhere safe: what it encrypts cannot be read
    /// without it.
    Generate {
        /// The key file to create.
        path: PathBuf,
    },
    /// Retire the key an encrypted repository opens with: wrap its data key under the key in
    /// NEW (make one with `ferry key generate`), then delete every other key's wrapping. The
    /// old key (given with --key-file) no longer opens it; nothing else is rewritten.
    Rotate {
        /// The encrypted repository.
        repo: String,
        /// The new key file.
        #[arg(long, value_name = "NEW")]
        new_key_file: PathBuf,
    },
}

/// `--include` / `--exclude` of restore and pull.
#[derive(clap::Args, Debug)]
pub(crate) struct Select {
    /// Take only paths matching GLOB (repeatable; `*` also crosses folders, so
    /// `*.safetensors` matches at any depth). A glob matching nothing is an error.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out paths matching GLOB (repeatable), e.g. `optimizer/*`.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

impl Select {
    pub(crate) fn parse(
        &self,
    ) -> Result<ferry::ops::select::Selection, ferry::ops::select::SelectError> {
        ferry::ops::select::Selection::new(&self.include, &self.exclude)
    }
}

/// `--bwlimit` of the commands that move data: push, restore, pull, replicate, mirror.
#[derive(clap::Args, Debug)]
pub(crate) struct Limit {
    /// Cap ferry's bandwidth: RATE for uploads and downloads alike, or UP:DOWN, each a size
    /// per second or `off` (e.g. 10MiB/s, 50MiB/s:off). One limit for the whole process,
    /// shared by all its transfers; server-side copies are not counted.
    #[arg(long, value_name = "RATE")]
    pub(crate) bwlimit: Option<ferry::store::bwlimit::BwLimit>,
}

impl Command {
    /// The `--bwlimit` given to a command that moves data.
    pub(crate) fn bwlimit(&self) -> Option<ferry::store::bwlimit::BwLimit> {
        match self {
            Command::Push { limit, .. }
            | Command::Restore { limit, .. }
            | Command::Pull { limit, .. }
            | Command::Replicate { limit, .. }
            | Command::Mirror { limit, .. } => limit.bwlimit,
            _ => None,
        }
    }
}
