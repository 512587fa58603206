//! The `notify-host` binary.

fn main() -> std::process::ExitCode {
    notify_host::cli::main()
}
