#![no_std]
// This file exists so that zcprof's build.rs can depend on this crate, which makes cargo
// rebuild the kernel programs when they change. The programs are in main.rs.
