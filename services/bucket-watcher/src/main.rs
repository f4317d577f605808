fn main() -> std::process::ExitCode {
    pmcore_runtime::main::<pmcore_bucket_watcher::App>()
}
