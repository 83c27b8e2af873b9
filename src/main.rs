//! The `echorelay` binary: everything lives in the library; see `cli/`.

/// mimalloc instead of the system allocator: events are parsed on one
/// thread, verified on another, committed and fanned out on a third, and
/// glibc's arenas pay for every such cross-thread free (see
/// docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(echorelay::cli::main());
}
