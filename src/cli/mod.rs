//! The command line's side of the library: text rendering of reports ([`render`]). The
//! binary (`main.rs`) parses arguments and calls [`crate::commands`], the CLI adapter over
//! [`crate::app`].

pub mod render;
