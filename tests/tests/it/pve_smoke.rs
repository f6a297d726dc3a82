//! `delegate-host smoke`, the check after `packer build` (packer/README.md,
//! step 7), run as a person would against the PVE simulator, with the
//! privileges packer/README.md's steps 2 and 3 grant (read from the README
//! itself): the template as the proxmox plugin leaves it (one cloud-init
//! drive, no `ipconfig0`) is refused before any VM is made; after step 6
//! (`qm set --ipconfig0 ip=dhcp`, here its API call with Packer's token)
//! doctor passes, a job runs on the template and each phase's time is
//! printed; a template that doctor cannot find stops it at doctor; with a
//! server running, the server runs the job.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Output, Stdio};
use std::time::Duration;

use delegate_host::provider::proxmox::client::{Params, PveClient};
use delegate_host::provider::proxmox::settings::Credentials;
use delegate_host::resolve::Secret;
use delegate_host::retry::RetryPolicy;
use delegate_tests::mcp::{HostEnv, Revision, connect_stdio, free_port};
use delegate_tests::pve_host::{real_guest, serve_env, sim_tls};
use delegate_tests::pve_sim::{Grant, PveSim, SimConfig};

/// The template the README's grants cover: on `local-lvm`, NIC on `vmbr1`.
const TEMPLATE: u32 = 9001;
/// Its cloud-init drive as the plugin adds it (`cloud_init = true`).
const CLOUD_INIT_DRIVE: &str = "local-lvm:vm-9001-cloudinit,media=cdrom";
/// Packer's token (README step 2).
const BUILD_TOKEN: &str = "packer@pve!template";

/// The grants packer/README.md gives `user`: every `pveum role add` and
/// every `pveum acl modify ... --users user`. The simulator does not place
/// VMs in pools, so a grant on `/pool/delegate` also stands on `/vms`, the
/// VMs that pool holds in the README's setup.
fn readme_grants(user: &str) -> Vec<Grant> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../packer/README.md"))
            .expect("read packer/README.md");
    let mut roles: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut grants = Vec::new();
    for line in readme.lines() {
        if let Some(rest) = line.strip_prefix("pveum role add ") {
            let (role, privs) = rest.split_once(" --privs ").expect("role with --privs");
            let privs = privs.split('"').nth(1).expect("quoted privileges");
            roles.insert(role, privs.split(',').map(str::to_string).collect());
        } else if let Some(rest) = line.strip_prefix("pveum acl modify ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let after = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1]);
            if after("--users") != Some(user) {
                continue;
            }
            let role = after("--roles").expect("acl with --roles");
            let privs = roles
                .get(role)
                .unwrap_or_else(|| panic!("role {role} used before it is made"))
                .clone();
            let path = words[0];
            if path == "/pool/delegate" {
                grants.push(Grant {
                    path: "/vms".into(),
                    privs: privs.clone(),
                    propagate: true,
                });
            }
            grants.push(Grant {
                path: path.into(),
                privs,
                propagate: true,
            });
        }
    }
    assert!(!grants.is_empty(), "packer/README.md grants {user} nothing");
    grants
}

/// The simulator with the template as a clone build leaves it, the host's
/// token with README step 3's privileges, and the host's settings as step 7
/// sets them (the URL with `/api2/json`, which Packer needs and the host
/// accepts).
async fn start(template: &str) -> (PveSim, HostEnv) {
    let mut cfg = SimConfig::standard();
    cfg.guest = Some(real_guest());
    cfg.grants = Some(readme_grants("delegate@pve"));
    for t in &mut cfg.templates {
        t.bridge = "vmbr1".into();
    }
    let sim = PveSim::start(cfg).await.unwrap();
    sim.with(|c| {
        let t = c.vms.get_mut(&TEMPLATE).expect("the template");
        t.config.insert("ide0".into(), CLOUD_INIT_DRIVE.into());
        t.config.remove("ipconfig0");
    });
    let mut env = serve_env(&sim, "smoke", free_port());
    env.set("PROXMOX_URL", format!("{}/api2/json", sim.url))
        .set("PROXMOX_STORAGE", "local-lvm")
        .set("PROXMOX_BRIDGE", "vmbr1")
        .set("DEFAULT_VM_TEMPLATE", template)
        .set("RUST_LOG", "warn");
    (sim, env)
}

async fn smoke(env: &HostEnv) -> (Option<i32>, String, String) {
    smoke_with(env, &[]).await
}

async fn smoke_with(env: &HostEnv, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["smoke"];
    all.extend_from_slice(args);
    let mut cmd = env.command(&all);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out: Output = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("delegate-host smoke did not finish")
        .expect("run delegate-host smoke");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every VM the simulator knows that is not one of its templates.
fn job_vms(sim: &PveSim) -> Vec<u32> {
    sim.with(|c| {
        c.vms
            .values()
            .filter(|v| !v.is_template())
            .map(|v| v.vmid)
            .collect()
    })
}

/// README step 6 through the API, with Packer's token as README step 2
/// makes it: `PUT .../qemu/9001/config ipconfig0=ip=dhcp`.
async fn set_dhcp_with_the_build_token(sim: &PveSim) {
    sim.add_token(BUILD_TOKEN, "build-secret", readme_grants("packer@pve"));
    let client = PveClient::build(
        &sim.url,
        Credentials::Token {
            id: BUILD_TOKEN.into(),
            secret: Secret::new("build-secret"),
        },
        &sim_tls(sim),
        RetryPolicy::new(2, Duration::from_millis(5), Duration::from_millis(20)),
    )
    .unwrap();
    client
        .set_config("pve1", TEMPLATE, Params::new().text("ipconfig0", "ip=dhcp"))
        .await
        .expect("step 6: set ipconfig0 on the template");
}

#[tokio::test]
async fn smoke_refuses_a_template_without_dhcp_then_times_a_job_once_it_has_it() {
    let (sim, env) = start("delegate-local").await;

    // As the plugin leaves it: a cloud-init drive without ipconfig0.
    let (code, stdout, stderr) = smoke(&env).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("[ ok ] API:"),
        "doctor ran first:\n{stdout}"
    );
    assert!(
        stdout.contains("[FAIL] template 9001 has a cloud-init drive (ide0)")
            && stdout.contains("qm set 9001 --ipconfig0 ip=dhcp"),
        "{stdout}"
    );
    assert!(job_vms(&sim).is_empty(), "a VM was made for a bad template");

    set_dhcp_with_the_build_token(&sim).await;
    let (code, stdout, stderr) = smoke(&env).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(
            "[ ok ] template 9001 on pve1: one cloud-init drive (ide0), ipconfig0 ip=dhcp"
        ),
        "{stdout}"
    );
    for phase in ["clone", "boot", "guest-ready", "job", "destroy", "total"] {
        let row = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(phase))
            .unwrap_or_else(|| panic!("no {phase} row:\n{stdout}"));
        let secs = row
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<f64>().ok());
        assert!(secs.is_some(), "{phase} was not timed: {row}\n{stdout}");
    }
    assert!(
        stdout.contains("| delegate smoke test: hello from"),
        "{stdout}"
    );
    assert!(stdout.contains("smoke: ok"), "{stdout}");

    // The command waited for the job's VM to be destroyed.
    assert!(job_vms(&sim).is_empty(), "VMs left: {:?}", job_vms(&sim));
    assert!(sim.guest_pids().is_empty(), "guest processes left");
}

#[tokio::test]
async fn smoke_stops_at_doctor_when_the_template_is_missing() {
    let (sim, env) = start("no-such-template").await;
    let (code, stdout, stderr) = smoke(&env).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("[FAIL]"), "{stdout}");
    assert!(stdout.contains("no job was started"), "{stdout}");
    assert!(job_vms(&sim).is_empty());
}

#[tokio::test]
async fn smoke_json_puts_one_verdict_on_stdout_and_the_progress_on_stderr() {
    let (sim, env) = start("delegate-local").await;
    let (code, stdout, stderr) = smoke_with(&env, &["--json"]).await;
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let verdict: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["stage"], "template", "{verdict}");
    assert_eq!(verdict["doctor"]["ok"], true, "{verdict}");
    assert!(
        verdict["templates"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("ipconfig0")),
        "{verdict}"
    );
    assert!(stderr.contains("[FAIL] template 9001"), "{stderr}");

    set_dhcp_with_the_build_token(&sim).await;
    let (code, stdout, stderr) = smoke_with(&env, &["--json"]).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let verdict: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["exitCode"], 0);
    assert_eq!(verdict["stage"], "job");
    assert_eq!(verdict["job"]["state"], "success", "{verdict}");
    assert_eq!(verdict["job"]["vmDestroyed"], true, "{verdict}");
    assert!(
        verdict["job"]["stdout"]
            .as_str()
            .is_some_and(|o| o.contains("delegate smoke test: hello from")),
        "{verdict}"
    );
    let phases = verdict["phases"].as_array().expect("phases");
    assert!(
        phases.iter().any(|l| l
            .as_str()
            .is_some_and(|l| l.trim_start().starts_with("total"))),
        "{verdict}"
    );
    assert!(stderr.contains("smoke: ok"), "{stderr}");
    assert!(job_vms(&sim).is_empty(), "VMs left: {:?}", job_vms(&sim));
}

#[tokio::test]
async fn smoke_into_a_closed_pipe_ends_quietly() {
    let (_sim, env) = start("no-such-template").await;
    let mut cmd = env.command(&["smoke"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run delegate-host smoke");
    // The reader goes before the first line is written (`smoke | head -0`).
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("delegate-host smoke did not finish")
        .expect("wait for delegate-host smoke");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[tokio::test]
async fn smoke_hands_the_job_to_a_running_server() {
    let (sim, env) = start("delegate-local").await;
    set_dhcp_with_the_build_token(&sim).await;
    // A server owns the data directory: smoke must not start a second
    // engine there, and the server runs the job.
    let server = connect_stdio(&env, Revision::Current).await;
    let (code, stdout, stderr) = smoke(&env).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("a server owns"), "{stdout}");
    assert!(stdout.contains("smoke: ok"), "{stdout}");
    assert!(job_vms(&sim).is_empty(), "VMs left: {:?}", job_vms(&sim));
    server.close().await;
}
