//! The `heptap` command: parses the command line and hands over to the library.

#![forbid(unsafe_code)]

// mimalloc rather than glibc's malloc: every relayed connection and every traced event
// allocates and frees small buffers from whichever worker thread runs it, and glibc takes its
// slow paths for them (a 2 KiB read buffer is a "large" chunk that consolidates the fast bins
// on each allocation). Measured in bench/run.sh: CPU per relayed connection with tracing on
// down by about 5 %, memory per idle connection up by 1 KiB (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    heptap::main()
}
