//! What `deploy/` ships is true: the systemd unit passes `systemd-analyze verify` (Debian's
//! systemd) with no warning, and the example configuration is what `herald config example`
//! prints and what `herald` accepts.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/herald.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/herald serve"));
    // systemd checks that the binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/herald", env!("CARGO_BIN_EXE_herald")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze is missing: install Debian's systemd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.trim().is_empty(), "warnings: {said}");
}

#[test]
fn the_example_configuration_is_current_and_accepted() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/herald.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["config", "example"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(shipped).unwrap(),
        "deploy/herald.toml is `herald config example` (run it again to update the file)"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--config", shipped, "config", "show"])
        .env_remove("HERALD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
