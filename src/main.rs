//! The `ferry` binary: parses the command line, wires the library, prints the report and maps
//! errors to exit codes (0 ok, 1 failed, 2 usage, 3 `sync` pushed nothing: nothing had settled).

use std::process::ExitCode;

use clap::Parser;
use ferry::cli::render;
use ferry::commands::{self, Context};
use ferry::ops::push::{ChangeCheck, PushOptions};
use ferry::progress::Reporter;
use ferry::service;
use serde::Serialize;

#[path = "main_args.rs"]
mod args;

use args::{Cli, Command, DryRunArgs};

/// What `--rehash` and `--deltas N` ask of a push.
fn push_options(rehash: bool, deltas: Option<u8>) -> PushOptions {
    PushOptions {
        check: if rehash {
            ChangeCheck::Rehash
        } else {
            ChangeCheck::Stat
        },
        max_depth: deltas,
    }
}

/// `ferry push`, or with `--dry-run` its forecast.
async fn push(
    ctx: &Context,
    (source, repos, name): (&str, &[String], &str),
    mode: &ferry::ops::shard::PushMode,
    opts: PushOptions,
    dry: DryRunArgs,
) -> anyhow::Result<ferry::ops::push::PushReport> {
    if !dry.dry_run {
        return Ok(commands::push_checked(ctx, source, repos, name, mode, opts).await?);
    }
    if *mode != ferry::ops::shard::PushMode::Replace {
        anyhow::bail!("--dry-run forecasts a plain push: drop --merge or --shard");
    }
    let prices = prices(dry.price_per_gib)?;
    Ok(commands::push_dry(ctx, source, repos, name, opts, &prices).await?)
}

/// `ferry pull`, or with `--dry-run` its forecast.
async fn pull(
    ctx: &Context,
    (repo, spec, dir): (&str, &str, &std::path::Path),
    opts: &ferry::ops::pull::PullOptions,
    dry: DryRunArgs,
) -> anyhow::Result<ferry::ops::pull::PullReport> {
    Ok(if dry.dry_run {
        let prices = prices(dry.price_per_gib)?;
        commands::pull_dry(ctx, (repo, spec, dir), opts, &prices).await?
    } else {
        commands::pull(ctx, repo, spec, dir, opts).await?
    })
}

/// `ferry replicate`, or with `--dry-run` its forecast; emits the report.
async fn replicate(
    ctx: &Context,
    (from, to, names): (&str, &str, &[String]),
    sharded: Option<(ferry::ops::shard::Shard, &str)>,
    dry: DryRunArgs,
    json: bool,
) -> anyhow::Result<bool> {
    let r = if !dry.dry_run {
        commands::replicate_with(ctx, from, to, names, sharded).await?
    } else if sharded.is_some() {
        anyhow::bail!("--dry-run forecasts a whole replication: drop --shard");
    } else {
        let prices = prices(dry.price_per_gib)?;
        commands::replicate_dry(ctx, from, to, names, &prices).await?
    };
    emit(json, &r, render::replicate)
}

/// The egress price table for a dry run: the defaults, `FERRY_EGRESS_PRICES`
/// (`aws=0.05,azure=0.08`: US dollars per GiB sent out of that cloud), then `--price-per-gib`.
fn prices(flag: Option<f64>) -> anyhow::Result<ferry::ops::egress::Prices> {
    let mut table = std::collections::BTreeMap::new();
    if let Ok(v) = std::env::var("FERRY_EGRESS_PRICES") {
        table = ferry::ops::egress::parse_prices(&v)
            .map_err(|e| anyhow::anyhow!("FERRY_EGRESS_PRICES: {e}"))?;
    }
    Ok(ferry::ops::egress::Prices::default()
        .with_config(&table)
        .with_flag(flag))
}

fn parse_cipher(s: &str) -> Result<ferry::crypto::Cipher, String> {
    ferry::crypto::Cipher::from_name(s)
        .ok_or_else(|| format!("unknown cipher {s:?}: use aes256gcmsiv or xchacha20poly1305"))
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
    let cli = Cli::parse();
    // Before any thread allocates: the daemon returns large per-run buffers to the system
    // when freed; one-shot commands recycle them.
    ferry::memory::tune_allocator(match cli.command {
        Command::Daemon { .. } => ferry::memory::Lifetime::LongRunning,
        _ => ferry::memory::Lifetime::OneShot,
    });
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
        // aws-config warns about profile files it skips; ferry's own error says what failed.
        0 => "warn,aws_config=error,aws_runtime=error",
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

/// Prints the report (JSON or text). Returns `true`, so an arm can end in `emit(…)?`.
fn emit<T: Serialize>(
    json: bool,
    report: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<bool> {
    if json {
        print_out(&serde_json::to_string_pretty(report)?)?;
    } else {
        print_out(&human(report))?;
    }
    Ok(true)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let index_dir = cli
        .index_dir
        .clone()
        .unwrap_or_else(ferry::index::Index::default_dir);
    let json = cli.json;
    match cli.command {
        // The service commands open the index themselves (the daemon holds it for its lifetime).
        Command::CheckConfig { .. }
        | Command::Sync { .. }
        | Command::Daemon { .. }
        | Command::Status { .. } => run_service(cli.command, &index_dir, json).await,
        Command::Demo { dir } => {
            let r = ferry::demo::run(dir).await?;
            emit(json, &r, ferry::demo::render)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Key {
            action: args::KeyAction::Generate { path },
        } => {
            let r = ferry::crypto::generate_key_file(&path)?;
            emit(json, &r, render::key_generated)?;
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let progress = if json {
                Reporter::silent()
            } else {
                Reporter::terminal()
            };
            let mut settings = ferry::app::Settings::from_env()?;
            let sources = ferry::app::Settings::key_sources(cli.key_files);
            settings.keys = ferry::crypto::Keyring::read(sources)?;
            if let Some(limit) = command.bwlimit().filter(|l| l.is_limited()) {
                settings.store.bandwidth = Some(ferry::store::bwlimit::Bandwidth::new(limit));
            }
            let ctx = Context::new(index_dir, progress, settings);
            run_repo_command(&ctx, command, json).await
        }
    }
}

/// `check-config`, `sync`, `daemon`, `status`.
async fn run_service(
    command: Command,
    index_dir: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { config } => {
            let r = service::check_config(config.as_ref())?;
            emit(json, &r, service::render_check)?;
        }
        Command::Sync { config, job } => {
            let config = ferry::config::Config::load(&config)?;
            let r = service::sync(config, index_dir, job.as_deref()).await?;
            let now = chrono::Utc::now().timestamp_millis();
            emit(json, &r, |r| service::render_sync(r, now))?;
            if !r.ok {
                return Ok(ExitCode::FAILURE);
            } else if r.nothing_ready {
                return Ok(ExitCode::from(NOTHING_READY));
            }
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
            service::daemon(config, index_dir, clock, |addr, c| {
                eprintln!(
                    "ferry daemon: {} from {}; dashboard on http://{addr}/",
                    render::count(c.jobs.len() as u64, "job"),
                    c.origin
                );
            })
            .await?;
        }
        Command::Status { config, url } => {
            let config = ferry::config::Config::load_or_default(config.as_ref())?;
            let r = service::status(config, index_dir, url.as_deref()).await?;
            emit(json, &r, service::render_statuses)?;
        }
        _ => unreachable!("run() sends only the service commands here"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The commands that write or read snapshots: one call to the CLI adapter each.
async fn run_repo_command(ctx: &Context, command: Command, json: bool) -> anyhow::Result<ExitCode> {
    let ok = match command {
        Command::Init {
            repo,
            chunk_avg,
            pack_size,
            deltas,
            encrypt,
            cipher,
        } => {
            let mut config = commands::new_config(chunk_avg, pack_size)?;
            if let Some(max_depth) = deltas.filter(|d| *d > 0) {
                config = config.with_deltas(max_depth)?;
            }
            if encrypt {
                config = config.encrypted_with(cipher.unwrap_or(ferry::crypto::Cipher::DEFAULT));
            }
            emit(
                json,
                &commands::init(ctx, &repo, config).await?,
                render::init,
            )?
        }
        Command::Push {
            source,
            repos,
            name,
            merge,
            shard,
            run,
            rehash,
            deltas,
            dry,
            ..
        } => {
            let mode = commands::push_mode(merge, shard, run.as_deref())?;
            let opts = push_options(rehash, deltas);
            let r = push(ctx, (&source, &repos, &name), &mode, opts, dry).await?;
            emit(json, &r, render::push)?
        }
        Command::Commit { repos, name, run } => {
            let r = commands::commit(ctx, &repos, &name, &run).await?;
            emit(json, &r, render::commit)?
        }
        Command::Restore {
            repo,
            snapshot,
            dest,
            overwrite,
            preserve_special_modes,
            select,
            ..
        } => {
            let opts = ferry::ops::restore::RestoreOptions {
                overwrite,
                special_modes: special_modes(preserve_special_modes),
                selection: select.parse()?,
            };
            let r = commands::restore(ctx, &repo, &snapshot, &dest, opts).await?;
            emit(json, &r, render::restore)?
        }
        Command::Pull {
            repo,
            snapshot,
            dir,
            keep,
            preserve_special_modes,
            select,
            dry,
            ..
        } => {
            let opts = ferry::ops::pull::PullOptions {
                keep,
                selection: select.parse()?,
                special_modes: special_modes(preserve_special_modes),
            };
            let r = pull(ctx, (&repo, &snapshot, &dir), &opts, dry).await?;
            emit(json, &r, render::pull)?
        }
        Command::Replicate {
            from,
            to,
            name,
            shard,
            run,
            dry,
            ..
        } => {
            let sharded = shard.zip(run.as_deref());
            replicate(ctx, (&from, &to, &name), sharded, dry, json).await?
        }
        Command::Snapshots { repo, name } => {
            let r = commands::snapshots(ctx, &repo, name.as_deref()).await?;
            emit(json, &r, render::snapshots)?;
            snapshot_problems(&r)
        }
        command => return run_check_command(ctx, command, json).await,
    };
    Ok(exit(ok))
}

/// Listing, checking, mirroring and cleaning up: `ls`, `verify`, `mirror`, `forget`, `gc`,
/// `repair`.
async fn run_check_command(
    ctx: &Context,
    command: Command,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let ok = match command {
        Command::Ls { repo, snapshot } => emit(
            json,
            &commands::ls(ctx, &repo, &snapshot).await?,
            render::ls,
        )?,
        Command::Verify {
            repo,
            read_data,
            mirror,
        } => match (mirror.as_deref(), repo) {
            (Some([source, dest]), _) => {
                let r = commands::verify_mirror(ctx, source, dest, read_data).await?;
                emit(json, &r, render::verify_mirror)? && r.ok
            }
            (_, Some(repo)) => {
                let r = commands::verify(ctx, &repo, read_data).await?;
                emit(json, &r, render::verify)? && r.ok
            }
            _ => unreachable!("clap requires a repository or --mirror SOURCE DEST"),
        },
        Command::Mirror {
            source,
            dest,
            delete,
            dry_run,
            rehash,
            allow_encrypted_source,
            ..
        } => {
            let opts = ferry::mirror::MirrorOptions {
                delete,
                dry_run,
                rehash,
                allow_encrypted_source,
            };
            let r = commands::mirror(ctx, &source, &dest, opts).await?;
            emit(json, &r, render::mirror)?
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
            let r = commands::forget(ctx, &repo, &name, keep, dry_run).await?;
            emit(json, &r, render::forget)?
        }
        Command::Gc {
            repo,
            grace,
            dry_run,
        } => {
            let opts = ferry::ops::gc::GcOptions { grace, dry_run };
            emit(json, &commands::gc(ctx, &repo, opts).await?, render::gc)?
        }
        Command::Repair { repo, dry_run } => {
            let r = commands::repair(ctx, &repo, dry_run).await?;
            emit(json, &r, render::repair)?
        }
        Command::Key {
            action: args::KeyAction::Rotate { repo, new_key_file },
        } => {
            let r = commands::rotate_key(ctx, &repo, &new_key_file).await?;
            emit(json, &r, render::key_rotated)?
        }
        _ => unreachable!("run() and run_repo_command() handle the others"),
    };
    Ok(exit(ok))
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `ferry snapshots` listed the refs it could read; a damaged one fails the command, in one
/// line, as always. Returns whether there was none.
fn snapshot_problems(r: &ferry::listing::SnapshotsReport) -> bool {
    let Some(first) = r.problems.first() else {
        return true;
    };
    let more = match r.problems.len() - 1 {
        0 => String::new(),
        n => format!(" (and {} more)", render::count(n as u64, "problem")),
    };
    eprintln!(
        "error: ref {:?}: {}{more}",
        first.name,
        ferry::listing::printable(&first.error)
    );
    false
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;

fn special_modes(preserve: bool) -> ferry::ops::restore::SpecialModes {
    use ferry::ops::restore::SpecialModes;
    if preserve {
        SpecialModes::Preserve
    } else {
        SpecialModes::Drop
    }
}
