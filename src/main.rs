/// mimalloc: exchanges are built and dropped at a high rate (see Cargo.toml),
/// and shard threads hand memory to the merger thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tfwire::main_with_args(std::env::args_os())
}
