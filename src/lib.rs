//! ferry keeps ML checkpoints and datasets in sync between S3, Azure Blob, Google Cloud
//! Storage and local disks, sending only what changed.
//!
//! Files are cut by content-defined chunking ([`chunker`]), each chunk named by its BLAKE3
//! hash ([`ids`]), compressed ([`codec`]) and packed into pack objects in a repository
//! ([`repo`]) on any object store ([`store`]). A local sled database ([`index`]) caches what
//! is where. The operations ([`ops`]) push, restore, replicate and verify; the application
//! layer ([`app`]) opens stores and repositories from typed inputs for both the CLI
//! ([`commands`], [`cli`]) and the daemon ([`daemon`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use ferry::app::{App, RefName, Settings};
//! use ferry::ops::{push::PushOptions, shard::PushMode};
//! use ferry::progress::Reporter;
//! use ferry::store::StoreUrl;
//! let app = App::new(std::env::temp_dir().join("ferry-index"), Settings::from_env()?);
//! let source: StoreUrl = "/data/ckpt".parse()?;
//! let repos: Vec<StoreUrl> = vec!["file:///backups/repo".parse()?];
//! let name = RefName::parse("llama-7b")?;
//! let report = app
//!     .push(&source, &repos, &name, &PushMode::Replace, PushOptions::default(), &Reporter::terminal())
//!     .await?;
//! println!("uploaded {} bytes", report.bytes_uploaded);
//! # Ok(()) }
//! ```

pub mod app;
pub mod chunker;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod ids;
pub mod index;
pub mod listing;
pub mod memory;
pub mod mirror;
pub mod ops;
pub mod progress;
pub mod repo;
pub(crate) mod server;
pub mod service;
pub mod store;
