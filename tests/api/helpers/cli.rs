//! Running the `latchkey` binary itself.

use super::*;

/// Runs the `latchkey` binary with `args` against `db` (its URL and the
/// test key, nothing else from this process's environment).
pub async fn run_cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    run_cli_with(db, args, &[]).await
}

/// [`run_cli`] with more environment variables.
pub async fn run_cli_with(
    db: &TestDb,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_HMAC_KEY", HMAC_KEY)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("run the latchkey binary")
}

/// The latchkey binary, run after `wrapper` (such as `prlimit --nofile=64
/// --`), set up to serve `db` on free ports with the test key and JSON logs
/// on stderr (piped), and nothing else from this process's environment.
pub fn server_command(db: &TestDb, wrapper: &[&str]) -> std::process::Command {
    let binary = env!("CARGO_BIN_EXE_latchkey");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    };
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LATCHKEY_LISTEN_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_HMAC_KEY", HMAC_KEY)
        .env("LATCHKEY_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    command
}
