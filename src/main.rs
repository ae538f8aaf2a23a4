// Many small allocations per exchange, made by the shard threads and freed by
// the merger: mimalloc handles cross-thread frees without arena locks.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tfwire::main_with_args(std::env::args_os())
}
