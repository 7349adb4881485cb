//! The certificates configuration tests share (`ClusterTls::for_tests`) live
//! in a temporary directory that must not outlive the test process: nextest
//! runs every test in a process of its own, and each used to leave one
//! directory in /tmp.

use std::path::Path;
use std::process::Command;

use globallock_localcluster::ClusterTls;

const HELPER: &str = "make_test_certificates_and_say_where";

/// Run as a child process by the test below; ignored when run on its own.
#[test]
#[ignore = "a child process of regression_test_certificates_are_removed_when_the_process_exits"]
fn make_test_certificates_and_say_where() {
    let tls = ClusterTls::for_tests();
    let dir = tls.ca.parent().expect("the CA file is in the directory");
    assert!(dir.join("client.pem").is_file());
    println!("CERTIFICATES={}", dir.display());
}

#[test]
fn regression_test_certificates_are_removed_when_the_process_exits() {
    let output = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            HELPER,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = stdout
        .lines()
        .find_map(|l| l.split_once("CERTIFICATES=").map(|(_, dir)| dir.trim()))
        .unwrap_or_else(|| panic!("the helper did not say where:\n{stdout}"));
    assert!(
        !Path::new(dir).exists(),
        "{dir} was left behind by the process that made it"
    );
}
