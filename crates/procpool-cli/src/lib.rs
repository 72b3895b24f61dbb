//! The library half of the `procpool` command: what tests call directly.
//! Today that is the chaos soak ([`soak`], `procpool soak`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod soak;
