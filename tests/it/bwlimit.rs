//! `--bwlimit`: through the counting proxy in front of moto or Azurite, a push's uploads and
//! a restore's downloads run at the limit (within 10 %) over several seconds, and the other
//! direction of an `UP:DOWN` limit is left alone.

use std::time::{Duration, Instant};

use crate::daemon::write_config;
use crate::data;
use crate::harness::{s, Backend, Ctx};
use crate::mirror::upstream;
use crate::proxy::Proxy;
use crate::raw::Location;
use crate::run::{Ferry, Run};

const MIB: u64 = 1 << 20;
/// The limit the tests set: 20 MiB at 4 MiB/s is about five seconds.
const RATE: u64 = 4 * MIB;
const DATA: usize = 20 << 20;

/// What a run through the proxy counted: (seconds since the spawn, bytes) every 10 ms, and
/// when the process had exited.
struct Trace {
    samples: Vec<(f64, u64)>,
    exit: f64,
}

impl Trace {
    /// Uploads: the proxy counts bytes as ferry sends them (it reads them at once), so the
    /// rate is the slope (least squares) of the count while it went from 10 % to 90 % of its
    /// final value: the steady part, whatever the first piece paid for before it was sent.
    fn steady_rate(&self) -> f64 {
        let total = self.samples.last().map_or(0, |s| s.1) as f64;
        let steady: Vec<(f64, f64)> = self
            .samples
            .iter()
            .map(|(t, n)| (*t, *n as f64))
            .filter(|(_, n)| (0.1 * total..=0.9 * total).contains(n))
            .collect();
        assert!(steady.len() > 100, "a transfer of a second at least");
        let len = steady.len() as f64;
        let (mt, mn) = steady
            .iter()
            .fold((0.0, 0.0), |(a, b), (t, n)| (a + t / len, b + n / len));
        let (cov, var) = steady.iter().fold((0.0, 0.0), |(c, v), (t, n)| {
            (c + (t - mt) * (n - mn), v + (t - mt) * (t - mt))
        });
        cov / var
    }

    /// Downloads: the socket buffers between the proxy and ferry hold up to a few MiB that
    /// ferry has not read yet, so the proxy's count runs ahead of ferry. The rate is taken
    /// from the last sample before the transfer began (under 2 % of the final count: only the
    /// small reads that come first) to the process's exit, by which ferry has read every
    /// byte; the work after the last byte only lowers it, so it is never overstated.
    fn rate_to_exit(&self) -> f64 {
        let total = self.samples.last().map_or(0, |s| s.1);
        let (t0, n0) = *self
            .samples
            .iter()
            .take_while(|(_, n)| *n * 50 < total)
            .last()
            .expect("the first sample counts nothing");
        (total - n0) as f64 / (self.exit - t0)
    }
}

/// Runs ferry through `proxy`, sampling `count(proxy)` every 10 ms.
fn measured(
    ferry: &Ferry,
    args: &[&str],
    var: &str,
    proxy: &Proxy,
    count: fn(&Proxy) -> u64,
) -> (Run, Trace) {
    proxy.reset();
    let mut running = ferry.spawn_env(args, &[(var, &proxy.url)]);
    let start = Instant::now();
    let mut samples = vec![(0.0, 0u64)];
    while !running.has_exited() {
        std::thread::sleep(Duration::from_millis(10));
        samples.push((start.elapsed().as_secs_f64(), count(proxy)));
    }
    let exit = start.elapsed().as_secs_f64();
    samples.push((exit, count(proxy)));
    (running.wait(), Trace { samples, exit })
}

/// The rate a real transfer reached against the limit. Above the limit by more than timing
/// noise means the limiter is not in the path (unlimited, these servers run at hundreds of
/// MiB/s). The lower bound is loose on purpose: the servers and ferry share two cores with the
/// rest of the suite, so a transfer can fall short of the limit for reasons of load; exact
/// pacing is proven on tokio's paused clock in `store::bwlimit::bucket`'s unit tests.
fn assert_near_limit(rate: f64, what: &str) {
    let share = rate / RATE as f64;
    eprintln!("{what}: {:.3} MiB/s", rate / MIB as f64);
    assert!(
        (0.5..=1.1).contains(&share),
        "{what} ran at {:.2} MiB/s, {:.0} % of the 4 MiB/s limit",
        rate / MIB as f64,
        share * 100.0
    );
}

/// A 20 MiB checkpoint and a repository with 2 MiB packs, so a transfer is many requests, as
/// one of a large checkpoint is. A push has two packs in flight and a restore four reads, so
/// at half a second per pack at the limit a slow answer from a server busy with other tests
/// does not hold the transfer back.
fn setup(ctx: &Ctx, backend: Backend) -> (std::path::PathBuf, Location) {
    let src = ctx.dir("src");
    data::write_file(&src, "model.bin", &data::random_bytes(77, DATA / 2));
    data::write_file(&src, "optim.bin", &data::random_bytes(78, DATA / 2));
    let repo = ctx.location(backend);
    ctx.ferry().json(&[
        "init",
        &repo.url,
        "--chunk-avg",
        "256KiB",
        "--pack-size",
        "2MiB",
    ]);
    (src, repo)
}

/// Push with `--bwlimit 4MiB/s:off`: what the client sends runs at 4 MiB/s; then a restore
/// under the same flag (downloads off) is not slowed down.
pub fn upload_is_paced(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (var, url) = upstream(backend).expect("a server backend");
    let proxy = Proxy::start(&url, None);
    let (src, location) = setup(&ctx, backend);
    let repo = location.url.clone();
    let ferry = ctx.ferry();
    let args = [
        "push",
        s(&src),
        &repo,
        "--name",
        "m",
        "--bwlimit",
        "4MiB/s:off",
    ];
    let (run, trace) = measured(&ferry, &args, var, &proxy, Proxy::sent);
    run.json();
    let rate = trace.steady_rate();
    assert!(proxy.sent() >= DATA as u64, "sent {}", proxy.sent());
    assert_near_limit(rate, "the push's upload");

    let dest = ctx.path("restore");
    let args = ["restore", &repo, "m", s(&dest), "--bwlimit", "4MiB/s:off"];
    let started = Instant::now();
    ferry.run_env(&args, &[(var, &proxy.url)]).json();
    let took = started.elapsed().as_secs_f64();
    eprintln!("restore with downloads off: {took:.2}s");
    // At the limit it would take five seconds at least.
    assert!(took < 4.0, "a restore with downloads off took {took:.1}s");
    data::assert_same_tree(&src, &dest);
}

/// Restore with `--bwlimit off:4MiB/s`: what the server sends back runs at 4 MiB/s, and the
/// restored tree is byte-identical.
pub fn download_is_paced(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (var, url) = upstream(backend).expect("a server backend");
    let proxy = Proxy::start(&url, None);
    let (src, location) = setup(&ctx, backend);
    let repo = location.url.clone();
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &repo, "--name", "m"]);
    let dest = ctx.path("restore");
    let args = ["restore", &repo, "m", s(&dest), "--bwlimit", "off:4MiB/s"];
    let (run, trace) = measured(&ferry, &args, var, &proxy, Proxy::received);
    run.json();
    let rate = trace.rate_to_exit();
    assert!(
        proxy.received() >= DATA as u64,
        "received {}",
        proxy.received()
    );
    assert_near_limit(rate, "the restore's download");
    data::assert_same_tree(&src, &dest);
}

/// `[runner] bwlimit` in the daemon's config: `ferry sync` of a mirror job sends its 20 MiB
/// at the limit (the daemon's stores share the config's bucket).
pub fn the_daemon_config_limits_a_sync(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (var, url) = upstream(backend).expect("a server backend");
    let proxy = Proxy::start(&url, None);
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    // Files of 1 MiB: each is one request, well under the 5 MiB parts of a larger file.
    for i in 0..20 {
        let name = format!("shard-{i:02}.bin");
        data::write_file(&src, &name, &data::random_bytes(90 + i, DATA / 20));
    }
    let job = format!(
        "[[jobs]]\nname = \"serve\"\nkind = \"mirror\"\nsource = \"{}\"\ntargets = [\"{}\"]\nevery = \"1h\"\nsettle = \"0s\"\n",
        s(&src),
        dest.url
    );
    let config = write_config(&ctx, "bwlimit = \"4MiB/s:off\"", &job);
    let args = ["sync", "--config", s(&config)];
    let (run, trace) = measured(&ctx.ferry(), &args, var, &proxy, Proxy::sent);
    let report = run.json();
    let rate = trace.steady_rate();
    assert_eq!(report["ok"], true, "{report}");
    assert!(proxy.sent() >= DATA as u64, "sent {}", proxy.sent());
    assert_near_limit(rate, "the daemon's mirror upload");
}

macro_rules! on_servers {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use crate::harness::Backend;

            #[test]
            fn s3() {
                super::$scenario(Backend::S3);
            }

            #[test]
            fn azure() {
                super::$scenario(Backend::Azure);
            }
        }
    )*};
}

on_servers!(
    upload_is_paced,
    download_is_paced,
    the_daemon_config_limits_a_sync
);

/// A limit that cannot be parsed fails before anything runs, naming the value and the form.
#[test]
fn a_bad_limit_is_a_usage_error_naming_the_form() {
    let Some(ctx) = Ctx::new(&[]) else {
        return;
    };
    let src = ctx.dir("src");
    let repo = ctx.dir("repo");
    let run = ctx
        .ferry()
        .run(&["push", s(&src), s(&repo), "--name", "m", "--bwlimit", "10"]);
    assert_eq!(run.status.code(), Some(2), "{run}");
    assert!(
        run.stderr.contains("invalid bandwidth limit \"10\""),
        "{run}"
    );
    assert!(run.stderr.contains("e.g. 10MiB/s, 50MiB/s:off"), "{run}");
}
