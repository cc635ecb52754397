//! The `ferry` binary: parses the command line, wires the library, prints the report and maps
//! errors to exit codes (0 ok, 1 failed, 2 usage, 3 `sync` pushed nothing: nothing had settled).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferry::commands::{self, Context};
use ferry::service;
use serde::Serialize;

/// Keep ML checkpoints and datasets in sync between S3, Azure Blob and local disks,
/// sending only what changed.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None)]
struct Cli {
    /// Where the local index (a rebuildable cache) lives.
    #[arg(long, global = true, env = "FERRY_INDEX_DIR")]
    index_dir: Option<PathBuf>,
    /// Print one JSON summary on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository at an empty location.
    Init {
        /// Where the repository goes: a folder, file:///path, s3://bucket/prefix or
        /// az://container/prefix.
        repo: String,
        /// Average chunk size (power of two, 1KiB–4MiB). Fixed for the repository's life.
        #[arg(long, value_parser = parse_size)]
        chunk_avg: Option<u64>,
        /// Target pack object size (1MiB–1GiB).
        #[arg(long, value_parser = parse_size)]
        pack_size: Option<u64>,
    },
    /// Push a folder, file or object prefix into one or more repositories.
    Push {
        /// What to push: a folder, a file, or an object prefix (s3://…, az://…).
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
        /// A local folder or an object prefix (s3://bucket/prefix, az://container/prefix).
        source: String,
        /// Where the plain objects go: s3://bucket/prefix, az://container/prefix or a folder.
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
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (examples: 64KiB, 1MiB, 32MiB)"))
}

/// `IP:PORT`, or `HOST:PORT` resolved now (a loopback address first, so `localhost:7878`
/// stays on loopback).
fn parse_bind(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.trim().parse() {
        return Ok(addr);
    }
    let addrs: Vec<_> = s
        .trim()
        .to_socket_addrs()
        .map_err(|e| format!("{e} (examples: 127.0.0.1:7878, localhost:7878, 0.0.0.0:7878)"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.ip().is_loopback() && a.is_ipv4())
        .or_else(|| addrs.iter().find(|a| a.ip().is_loopback()))
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} names no address"))
}

/// `ferry sync`'s exit status when it pushed nothing because nothing had settled (the source
/// changed within `settle`).
const NOTHING_READY: u8 = 3;

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (examples: 30s, 10m, 1h)"))
}

fn main() -> ExitCode {
    // Before any thread allocates: large per-run buffers go back to the system when freed.
    ferry::memory::tune_allocator();
    let cli = Cli::parse();
    let json = cli.json;
    init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // A push dropped at shutdown may still have a blocking reader finishing its chunk. Shut
    // down before printing, so the error is the last line a user (or a script) sees.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            let msg = one_line(&e);
            if json {
                // Scripts reading --json get an object either way; the line on stderr stays.
                let body = serde_json::json!({ "ok": false, "error": msg });
                let _ = print_out(&body.to_string());
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    };
    code
}

/// Prints a report on stdout. A reader that went away (`ferry … | head -1`) is not an error:
/// the work is done, only the rest of the report is not wanted.
fn print_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The error and its causes on one line, each part said once: a cause already in the message
/// is not appended, and a part repeated by nested wrappers (an OS error quoted by each layer)
/// is kept only where it first appears.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    let msg = msg.replace(['\n', '\r'], " ");
    let mut parts: Vec<&str> = Vec::new();
    for part in msg.split(": ") {
        if !(part.contains("(os error") && parts.contains(&part)) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,ferry=info",
        _ => "info,ferry=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn emit<T: Serialize>(
    json: bool,
    report: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        print_out(&serde_json::to_string_pretty(report)?)?;
    } else {
        print_out(&human(report))?;
    }
    Ok(())
}

/// `--include` / `--exclude` of restore and pull.
#[derive(clap::Args, Debug)]
struct Select {
    /// Take only paths matching GLOB (repeatable; `*` also crosses folders, so
    /// `*.safetensors` matches at any depth). A glob matching nothing is an error.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out paths matching GLOB (repeatable), e.g. `optimizer/*`.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

impl Select {
    fn parse(&self) -> Result<ferry::ops::select::Selection, ferry::ops::select::SelectError> {
        ferry::ops::select::Selection::new(&self.include, &self.exclude)
    }
}

fn special_modes(preserve: bool) -> ferry::ops::restore::SpecialModes {
    use ferry::ops::restore::SpecialModes;
    if preserve {
        SpecialModes::Preserve
    } else {
        SpecialModes::Drop
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let index_dir = cli
        .index_dir
        .clone()
        .unwrap_or_else(ferry::index::Index::default_dir);
    let json = cli.json;
    // The service commands open the index themselves (the daemon holds it for its lifetime).
    match cli.command {
        Command::CheckConfig { config } => {
            let r = service::check_config(config.as_ref())?;
            emit(json, &r, service::render_check)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Sync { config, job } => {
            let config = ferry::config::Config::load(&config)?;
            let r = service::sync(config, &index_dir, job.as_deref()).await?;
            let now = chrono::Utc::now().timestamp_millis();
            emit(json, &r, |r| service::render_sync(r, now))?;
            return Ok(if !r.ok {
                ExitCode::FAILURE
            } else if r.nothing_ready {
                ExitCode::from(NOTHING_READY)
            } else {
                ExitCode::SUCCESS
            });
        }
        Command::Daemon {
            config,
            bind,
            fake_clock,
        } => {
            let mut config = ferry::config::Config::load_or_default(config.as_ref())?;
            if let Some(bind) = bind {
                config = config.with_bind(bind)?;
            }
            let clock = match fake_clock {
                Some(text) => ferry::daemon::Clock::parse(&text)?,
                None => ferry::daemon::Clock::real(),
            };
            service::daemon(config, &index_dir, clock, |addr, c| {
                eprintln!(
                    "ferry daemon: {} from {}; dashboard on http://{addr}/",
                    commands::count(c.jobs.len() as u64, "job"),
                    c.origin
                );
            })
            .await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Status { config, url } => {
            let config = ferry::config::Config::load_or_default(config.as_ref())?;
            let r = service::status(config, &index_dir, url.as_deref()).await?;
            emit(json, &r, service::render_statuses)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let ctx = Context::new(index_dir, !cli.json);
    match cli.command {
        Command::Init {
            repo,
            chunk_avg,
            pack_size,
        } => {
            let config = commands::new_config(chunk_avg, pack_size)?;
            let r = commands::init(&repo, config).await?;
            emit(json, &r, |r| {
                format!(
                    "initialized {} (chunks ~{}, packs {})",
                    r.repo,
                    commands::bytes(r.chunk_avg as u64),
                    commands::bytes(r.pack_size)
                )
            })?;
        }
        Command::Push {
            source,
            repos,
            name,
            merge,
            shard,
            run,
            rehash,
        } => {
            use ferry::ops::push::ChangeCheck;
            use ferry::ops::shard::PushMode;
            let mode = match (shard, run) {
                (Some(shard), Some(run)) => PushMode::Shard { shard, run },
                _ if merge => PushMode::Merge,
                _ => PushMode::Replace,
            };
            let check = if rehash {
                ChangeCheck::Rehash
            } else {
                ChangeCheck::Stat
            };
            let r = commands::push_checked(&ctx, &source, &repos, &name, &mode, check).await?;
            emit(json, &r, commands::render_push)?;
        }
        Command::Commit { repos, name, run } => {
            let r = commands::commit(&repos, &name, &run).await?;
            emit(json, &r, commands::render_commit)?;
        }
        Command::Restore {
            repo,
            snapshot,
            dest,
            overwrite,
            preserve_special_modes,
            select,
        } => {
            let opts = ferry::ops::restore::RestoreOptions {
                overwrite,
                special_modes: special_modes(preserve_special_modes),
                selection: select.parse()?,
            };
            let r = commands::restore(&ctx, &repo, &snapshot, &dest, opts).await?;
            emit(json, &r, commands::render_restore)?;
        }
        Command::Pull {
            repo,
            snapshot,
            dir,
            keep,
            preserve_special_modes,
            select,
        } => {
            let opts = ferry::ops::pull::PullOptions {
                keep,
                selection: select.parse()?,
                special_modes: special_modes(preserve_special_modes),
            };
            let r = commands::pull(&ctx, &repo, &snapshot, &dir, &opts).await?;
            emit(json, &r, commands::render_pull)?;
        }
        Command::Replicate {
            from,
            to,
            name,
            shard,
            run,
        } => {
            let sharded = match (shard, run) {
                (Some(shard), Some(run)) => {
                    Some(ferry::ops::replicate::ReplicaShard { shard, run })
                }
                _ => None,
            };
            let r = commands::replicate_with(&ctx, &from, &to, &name, sharded.as_ref()).await?;
            emit(json, &r, commands::render_replicate)?;
        }
        Command::Snapshots { repo, name } => {
            let r = commands::snapshots(&repo, name.as_deref()).await?;
            emit(json, &r, commands::render_snapshots)?;
            if let Some(first) = r.problems.first() {
                // The rows that could be read are above; the failure is one line, as always.
                let more = match r.problems.len() - 1 {
                    0 => String::new(),
                    n => format!(" (and {} more)", commands::count(n as u64, "problem")),
                };
                eprintln!(
                    "error: ref {:?}: {}{more}",
                    first.name,
                    ferry::listing::printable(&first.error)
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Ls { repo, snapshot } => {
            let r = commands::ls(&repo, &snapshot).await?;
            emit(json, &r, commands::render_ls)?;
        }
        Command::Verify {
            repo,
            read_data,
            mirror,
        } => {
            let ok = match (mirror.as_deref(), repo) {
                (Some([source, dest]), _) => {
                    let r = commands::verify_mirror(source, dest, read_data).await?;
                    emit(json, &r, commands::render_verify_mirror)?;
                    r.ok
                }
                (_, Some(repo)) => {
                    let r = commands::verify(&repo, read_data).await?;
                    emit(json, &r, commands::render_verify)?;
                    r.ok
                }
                _ => unreachable!("clap requires a repository or --mirror SOURCE DEST"),
            };
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Mirror {
            source,
            dest,
            delete,
            dry_run,
            rehash,
        } => {
            let opts = ferry::mirror::MirrorOptions {
                delete,
                dry_run,
                rehash,
            };
            let r = commands::mirror(&ctx, &source, &dest, opts).await?;
            emit(json, &r, commands::render_mirror)?;
        }
        Command::Forget {
            repo,
            name,
            keep_last,
            keep_every,
            delete_ref,
            dry_run,
        } => {
            let keep = ferry::ops::gc::Retention {
                keep_last: if delete_ref { 0 } else { keep_last },
                keep_every,
            };
            let r = commands::forget(&repo, &name, keep, dry_run).await?;
            emit(json, &r, commands::render_forget)?;
        }
        Command::Gc {
            repo,
            grace,
            dry_run,
        } => {
            let r = commands::gc(&ctx, &repo, ferry::ops::gc::GcOptions { grace, dry_run }).await?;
            emit(json, &r, commands::render_gc)?;
        }
        Command::Repair { repo, dry_run } => {
            let r = commands::repair(&repo, dry_run).await?;
            emit(json, &r, ferry::ops::repair::render)?;
        }
        Command::Demo { dir } => {
            let r = ferry::demo::run(dir).await?;
            emit(json, &r, ferry::demo::render)?;
        }
        // Returned above.
        Command::CheckConfig { .. }
        | Command::Sync { .. }
        | Command::Daemon { .. }
        | Command::Status { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
