//! The `echorelay` binary: everything lives in the library; see `cli/`.

fn main() {
    std::process::exit(echorelay::cli::main());
}
