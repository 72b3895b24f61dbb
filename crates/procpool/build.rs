//! Linux only: on any other OS the build stops here, at one error that says
//! why, before the crate itself is compiled (which would end in a wall of
//! unresolved names: `memfd_create`, `prctl`, `SIOCOUTQNSD`, ...).
#![forbid(unsafe_code)]

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_CFG_TARGET_OS");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        println!(
            "cargo::error=procpool supports Linux only (this target's OS is `{os}`): workers \
             are started and supervised with Linux interfaces that have no portable equivalent \
             here: memfd_create (the shared reply ring and SharedBytes), prctl(PR_SET_PDEATHSIG) \
             (workers die with the pool), SO_PEERCRED, SIOCOUTQNSD and /proc."
        );
    }
}
