fn main() -> std::process::ExitCode {
    tfwire::main_with_args(std::env::args_os())
}
