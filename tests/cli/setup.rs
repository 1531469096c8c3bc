//! The README's commands set up a fresh machine themselves: scripts/install-system-deps
//! installs exactly the missing Debian packages, and nothing when all are there. Driven with
//! stand-ins for dpkg-query, apt-get, id and sudo on PATH, so no package is touched here.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{Fixture, repo};

fn shim(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs the script with `installed` packages known to dpkg, as user `uid`; returns (exit
/// code, what apt-get was asked, stderr).
fn install(installed: &[&str], uid: u32, with_sudo: bool) -> (i32, String, String) {
    let fx = Fixture::new();
    let bin = fx.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = fx.path().join("apt.log");
    let known = installed.join(" ");
    shim(
        &bin,
        "dpkg-query",
        &format!(
            "for a in \"$@\"; do for p in {known}; do [ \"$p\" = \"$a\" ] && {{ printf 'install ok installed'; exit 0; }}; done; done; exit 1"
        ),
    );
    shim(
        &bin,
        "apt-get",
        &format!("echo \"apt-get $*\" >> {}", log.display()),
    );
    shim(&bin, "id", &format!("echo {uid}"));
    if with_sudo {
        shim(
            &bin,
            "sudo",
            &format!("echo sudo >> {}; \"$@\"", log.display()),
        );
    }
    let out = std::process::Command::new("/bin/bash")
        .arg(repo("scripts/install-system-deps"))
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn setup_installs_only_the_missing_system_packages() {
    let (code, apt, err) = install(&["pkg-config"], 0, false);
    assert_eq!(code, 0, "{err}");
    assert!(apt.contains("apt-get update"), "{apt}");
    assert!(
        apt.contains("apt-get install -y -qq libhdf5-dev python3-venv g++ postgresql"),
        "{apt}"
    );
    // A fresh machine: all three.
    let (code, apt, _) = install(&[], 0, false);
    assert_eq!(code, 0);
    assert!(
        apt.contains("install -y -qq libhdf5-dev pkg-config python3-venv g++ postgresql"),
        "{apt}"
    );
}

#[test]
fn setup_does_nothing_when_everything_is_installed() {
    let (code, apt, err) = install(
        &[
            "libhdf5-dev",
            "pkg-config",
            "python3-venv",
            "g++",
            "postgresql",
        ],
        0,
        false,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(apt, "");
    assert_eq!(err, "");
}

#[test]
fn setup_uses_sudo_when_not_root_and_says_what_to_run_without_it() {
    let (code, apt, _) = install(&[], 1000, true);
    assert_eq!(code, 0);
    assert!(apt.starts_with("sudo\n"), "{apt}");
    let (code, apt, err) = install(&[], 1000, false);
    assert_eq!(code, 1);
    assert_eq!(apt, "");
    assert!(
        err.contains(
            "as root, run: apt-get install libhdf5-dev pkg-config python3-venv g++ postgresql"
        ),
        "{err}"
    );
}
