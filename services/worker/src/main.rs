fn main() -> std::process::ExitCode {
    pmcore_runtime::main::<pmcore_worker::App>()
}
