//! The per-VM egress firewall on the simulator: a job's VM and a pool VM get
//! `firewall=1` on net0 and exactly the rules for the callback and gateway;
//! a token without `VM.Config.Network` gets PVE's 403, which `auto` turns
//! into a warning (provider description, doctor) and `required` into a
//! failed provisioning; doctor says which confinement holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use delegate_host::engine::Engine;
use delegate_host::mcp::calls::status_view;
use delegate_host::provider::proxmox::doctor::{Check, DoctorReport, doctor_with};
use delegate_host::provider::proxmox::{FirewallMode, ProxmoxProvider, ProxmoxSettings};
use delegate_host::provider::{IdleRequest, Provider, ProvisionRequest, VmRef, VmSize};
use delegate_host::resolve::Secret;
use delegate_host::views::StatusView;
use delegate_proto::{Bootstrap, JobManifest, JobState};
use delegate_tests::pve_host::{
    host_settings, proxmox_provider, proxmox_settings, real_guest, start_with,
};
use delegate_tests::pve_sim::{self, Grant, PveSim, SimConfig, VmFirewall};
use serde_json::json;

const GIB: u64 = 1024 * 1024 * 1024;
const CALLBACK: &str = "http://127.0.0.1:8765";
const GATEWAY: &str = "http://127.0.0.1:3128";

fn size() -> VmSize {
    VmSize {
        cpus: 1,
        memory_bytes: GIB,
        disk_bytes: 8 * GIB,
    }
}

fn request(job: &str) -> ProvisionRequest {
    ProvisionRequest {
        job_id: job.into(),
        template: Some("delegate-template".into()),
        size: size(),
        bootstrap: Bootstrap {
            v: 1,
            job_id: job.into(),
            callback_url: CALLBACK.into(),
            token: "t".repeat(64),
            egress_url: None,
        },
        egress_url: Some(GATEWAY.into()),
        deadline_ms: 4_102_444_800_000,
    }
}

/// Settings for `mode`, as a token with (or without) `VM.Config.Network`.
fn setup(sim: &PveSim, mode: FirewallMode, network_privilege: bool) -> ProxmoxSettings {
    let mut privs = pve_sim::perms::delegate_role(false);
    if network_privilege {
        privs.insert("VM.Config.Network".into());
    }
    sim.add_token(
        "fw@pve!t",
        "fw-secret",
        vec![Grant {
            path: "/".into(),
            privs,
            propagate: true,
        }],
    );
    let mut s = proxmox_settings(sim, "fw", 4);
    s.credentials = delegate_host::provider::proxmox::Credentials::Token {
        id: "fw@pve!t".into(),
        secret: Secret::new("fw-secret"),
    };
    s.firewall.mode = mode;
    s.firewall.callback_url = Some(CALLBACK.into());
    s.firewall.egress_url = Some(GATEWAY.into());
    s
}

/// Doctor's `egress firewall` line.
fn egress_check(report: &DoctorReport) -> &Check {
    report
        .checks
        .iter()
        .find(|c| c.name == "egress firewall")
        .unwrap_or_else(|| panic!("no egress firewall line: {report}"))
}

async fn provision(p: &ProxmoxProvider, job: &str) -> Result<VmRef, String> {
    p.provision(request(job), &|_| {})
        .await
        .map_err(|e| e.to_string())
}

fn rule(port: &str, what: &str, url_port: &str) -> BTreeMap<String, String> {
    [
        ("type", "out"),
        ("action", "ACCEPT"),
        ("enable", "1"),
        ("iface", "net0"),
        ("proto", "tcp"),
        ("dest", "127.0.0.1"),
        ("dport", port),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([(
        "comment".to_string(),
        format!("delegate: {what} 127.0.0.1:{url_port}"),
    )])
    .collect()
}

fn expected_rules() -> Vec<BTreeMap<String, String>> {
    vec![
        rule("8765", "callback", "8765"),
        rule("3128", "gateway", "3128"),
    ]
}

fn firewall_of(sim: &PveSim, vmid: u32) -> (String, VmFirewall) {
    sim.with(|c| {
        (
            c.vms[&vmid].config["net0"].clone(),
            c.firewalls.get(&vmid).cloned().unwrap_or_default(),
        )
    })
}

fn assert_firewalled(sim: &PveSim, vm: &VmRef) {
    let vmid: u32 = vm.id.parse().unwrap();
    let template_net0 = sim.with(|c| c.vms[&9000].config["net0"].clone());
    let (net0, fw) = firewall_of(sim, vmid);
    assert_eq!(net0, format!("{template_net0},firewall=1"));
    assert_eq!(fw.rules, expected_rules());
    let opt = |k: &str| fw.options.get(k).cloned();
    assert_eq!(opt("enable").as_deref(), Some("1"));
    assert_eq!(opt("policy_in").as_deref(), Some("DROP"));
    assert_eq!(opt("policy_out").as_deref(), Some("DROP"));
    assert_eq!(opt("dhcp").as_deref(), Some("1"));
}

#[tokio::test]
async fn a_job_vm_gets_firewall_on_net0_and_exactly_the_expected_rules() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    // The template carries a rule of its own, which a clone inherits.
    sim.with(|c| {
        let mut inherited = BTreeMap::new();
        inherited.insert("type".to_string(), "in".to_string());
        inherited.insert("action".to_string(), "ACCEPT".to_string());
        inherited.insert("macro".to_string(), "SSH".to_string());
        c.firewalls.insert(
            9000,
            VmFirewall {
                options: BTreeMap::new(),
                rules: vec![inherited],
            },
        );
    });
    let p = proxmox_provider(setup(&sim, FirewallMode::Required, true));
    let vm = provision(&p, "11111111-2222-4333-8444-000000000001")
        .await
        .expect("provisioned");
    assert_firewalled(&sim, &vm);
    assert_eq!(p.egress_unenforced(), None);
    assert!(!p.describe().contains("not enforced"), "{}", p.describe());
}

#[tokio::test]
async fn a_pool_vm_is_firewalled_when_it_boots() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let p = proxmox_provider(setup(&sim, FirewallMode::Auto, true));
    let vm = p
        .prepare_idle(
            IdleRequest {
                pool_id: "pool-fw1".into(),
                class: "delegate-template:1c1g8g".into(),
                template: "delegate-template".into(),
                size: size(),
                callback_url: CALLBACK.into(),
                egress_url: None,
            },
            &|_| {},
        )
        .await
        .expect("a pool VM");
    assert_firewalled(&sim, &vm);
}

#[tokio::test]
async fn auto_without_the_privilege_runs_the_job_and_says_egress_is_not_enforced() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let s = setup(&sim, FirewallMode::Auto, false);
    let p = proxmox_provider(s.clone());
    let vm = provision(&p, "11111111-2222-4333-8444-000000000002")
        .await
        .expect("auto carries on");
    let (net0, fw) = firewall_of(&sim, vm.id.parse().unwrap());
    assert!(!net0.contains("firewall"), "{net0}");
    assert_eq!(fw, VmFirewall::default());
    let why = p.egress_unenforced().expect("a warning");
    assert!(
        why.contains("not enforced") && why.contains("VM.Config.Network"),
        "{why}"
    );
    // PVE's own 403 text reaches the warning.
    assert!(why.contains("Permission check failed (/vms/"), "{why}");
    assert!(
        p.describe().contains("egress is not enforced"),
        "{}",
        p.describe()
    );

    let report = doctor_with(p.client(), &s, Some("delegate-template")).await;
    let egress = egress_check(&report);
    assert!(egress.ok, "{report}");
    assert!(egress.detail.contains("NOT enforced"), "{report}");
    assert!(egress.detail.contains("VM.Config.Network"), "{report}");
}

#[tokio::test]
async fn required_without_the_privilege_fails_the_job_naming_the_privilege() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let s = setup(&sim, FirewallMode::Required, false);
    let p = proxmox_provider(s.clone());
    let err = provision(&p, "11111111-2222-4333-8444-000000000003")
        .await
        .expect_err("required fails");
    assert!(
        err.contains("VM.Config.Network") && err.contains("DELEGATE_PROXMOX_FIREWALL=required"),
        "{err}"
    );

    let report = doctor_with(p.client(), &s, Some("delegate-template")).await;
    assert!(!report.ok(), "{report}");
    let egress = egress_check(&report);
    assert!(!egress.ok, "{report}");
    assert!(
        report
            .missing
            .iter()
            .any(|m| m.privilege == "VM.Config.Network"),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_says_the_datacenter_firewall_must_be_on_for_vm_rules_to_hold() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let mut s = setup(&sim, FirewallMode::Auto, true);
    let p = proxmox_provider(s.clone());
    let report = doctor_with(p.client(), &s, Some("delegate-template")).await;
    let egress = egress_check(&report);
    assert!(!egress.ok, "{report}");
    assert!(
        egress.detail.contains("datacenter firewall is disabled"),
        "{report}"
    );

    sim.with(|c| c.cluster_firewall.insert("enable".into(), "1".into()));
    let report = doctor_with(p.client(), &s, Some("delegate-template")).await;
    let egress = egress_check(&report);
    assert!(egress.ok, "{report}");
    assert!(
        egress.detail.contains("delegate firewalls each job VM"),
        "{report}"
    );

    s.firewall.mode = FirewallMode::Off;
    let report = doctor_with(p.client(), &s, Some("delegate-template")).await;
    let egress = egress_check(&report);
    assert!(
        egress.ok && egress.detail.contains("network layout"),
        "{report}"
    );
}

/// Runs `manifest` on `engine` to its end; its status then.
async fn run_to_end(engine: &Engine, manifest: serde_json::Value) -> StatusView {
    let m = &engine.manager;
    let id = m
        .submit(JobManifest::from_value(manifest).unwrap())
        .await
        .unwrap()
        .id;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rec = m.get(&id).unwrap();
        if rec.state.is_final() {
            assert_eq!(rec.state, JobState::Success, "{:?}", rec.error);
            return status_view(m, &rec);
        }
        assert!(Instant::now() < deadline, "job {id} never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_job_whose_vm_went_unfirewalled_says_so_in_its_own_status() {
    let mut cfg = SimConfig::standard();
    cfg.guest = Some(real_guest());
    let sim = PveSim::start(cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let class = "delegate-template:1c1g8g";
    let engine = start_with(
        setup(&sim, FirewallMode::Auto, false),
        host_settings(dir.path(), &format!("{class}=1"), 2),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine
        .manager
        .pool_stats()
        .get(class)
        .map_or(0, |s| s.ready)
        < 1
    {
        assert!(Instant::now() < deadline, "the pool never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unenforced = |s: &StatusView| {
        assert_eq!(s.warnings.len(), 1, "{s:?}");
        let w = &s.warnings[0];
        assert!(
            w.contains("egress is not enforced") && w.contains("VM.Config.Network"),
            "{w}"
        );
    };

    // A warm VM from the pool, and one cloned for the job (another size).
    let warm = run_to_end(&engine, json!({"task": "echo warm", "agentType": "script"})).await;
    assert_eq!(
        warm.vm.as_ref().and_then(|v| v.start.as_deref()),
        Some("warm")
    );
    unenforced(&warm);
    let cold = run_to_end(
        &engine,
        json!({"task": "echo cold", "agentType": "script", "resources": {"cpu": 2}}),
    )
    .await;
    assert_eq!(
        cold.vm.as_ref().and_then(|v| v.start.as_deref()),
        Some("cold")
    );
    unenforced(&cold);
    // The JSON the MCP tool and `status --json` give carries it.
    let json = serde_json::to_value(&cold).unwrap();
    assert_eq!(json["warnings"][0], cold.warnings[0], "{json}");

    // Once the token may, the next job's VM is firewalled: no warning.
    setup(&sim, FirewallMode::Auto, true);
    let fine = run_to_end(
        &engine,
        json!({"task": "echo fine", "agentType": "script", "resources": {"cpu": 2}}),
    )
    .await;
    assert!(fine.warnings.is_empty(), "{fine:?}");
    assert!(
        serde_json::to_value(&fine)
            .unwrap()
            .get("warnings")
            .is_none(),
        "no warnings, no field"
    );
    engine.stop().await;
}
