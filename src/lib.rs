//! ferry keeps ML checkpoints and datasets in sync between S3, Azure Blob and local disks,
//! sending only what changed.
//!
//! Files are cut by content-defined chunking ([`chunker`]), each chunk named by its BLAKE3
//! hash ([`ids`]), compressed ([`codec`]) and packed into pack objects in a repository
//! ([`repo`]) on any object store ([`store`]). A local sled database ([`index`]) caches what
//! is where. The operations ([`ops`]) push, restore, replicate and verify; [`commands`] opens
//! stores from URLs for the CLI.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use ferry::commands::{Context, push};
//! let ctx = Context::new(std::env::temp_dir().join("ferry-index"), false);
//! let report = push(&ctx, "/data/ckpt", &["file:///backups/repo".into()], "llama-7b").await?;
//! println!("uploaded {} bytes", report.bytes_uploaded);
//! # Ok(()) }
//! ```

pub mod chunker;
pub mod codec;
pub mod commands;
pub mod config;
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
pub mod server;
pub mod service;
pub mod store;
