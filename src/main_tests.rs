//! Unit tests of the binary: help texts, argument parsers, the one-line error.

use super::*;
use clap::CommandFactory;

/// `ferry CMD --help` explains every argument, positional ones included.
#[test]
fn every_argument_has_help_text() {
    let cli = Cli::command();
    let mut missing = Vec::new();
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("ferry {} {}", sub.get_name(), arg.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "no --help text for: {missing:?}");
}

#[test]
fn an_os_error_is_said_once() {
    let io = || std::io::Error::from_raw_os_error(2);
    let wrapped = anyhow::Error::new(io())
        .context(format!("reading config: {}", io()))
        .context(format!("cannot open x: {}: {}", io(), io()));
    let line = one_line(&wrapped);
    assert_eq!(line.matches("os error 2").count(), 1, "{line}");
    assert!(line.starts_with("cannot open x: No such file"), "{line}");
    assert!(line.contains("reading config"), "{line}");
    let plain = anyhow::anyhow!("a: b: a: b");
    assert_eq!(one_line(&plain), "a: b: a: b");
}

#[test]
fn bind_takes_addresses_and_host_names() {
    assert_eq!(
        parse_bind("127.0.0.1:0").unwrap(),
        "127.0.0.1:0".parse().unwrap()
    );
    let local = parse_bind("localhost:7878").unwrap();
    assert!(local.ip().is_loopback() && local.port() == 7878, "{local}");
    assert!(parse_bind("localhost").is_err());
    assert!(parse_bind("localhost:port").is_err());
}

#[test]
fn forget_refuses_keep_last_zero_and_deletes_a_ref_by_flag() {
    assert!(Cli::try_parse_from(["ferry", "forget", "r", "n", "--keep-last", "0"]).is_err());
    let cli = Cli::try_parse_from(["ferry", "forget", "r", "n", "--delete-ref"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Forget {
            delete_ref: true,
            ..
        }
    ));
    assert!(Cli::try_parse_from([
        "ferry",
        "forget",
        "r",
        "n",
        "--delete-ref",
        "--keep-last",
        "2"
    ])
    .is_err());
}
