//! The Proxmox provider through the `Provider` trait against the simulator:
//! the VM's configuration, the bootstrap reaching a process in the VM,
//! idempotent destroy, reconciliation, placement and caps, VMID races,
//! failures (clone, agent, offline node), cancel while cloning, PVE 8.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use delegate_host::provider::proxmox::{CloneMode, Credentials, ProxmoxProvider, ProxmoxSettings};
use delegate_host::provider::{Provider, ProvisionRequest, VmRef, VmSize};
use delegate_host::resolve::Secret;
use delegate_host::retry::RetryPolicy;
use delegate_proto::Bootstrap;
use delegate_tests::pve_host::{proxmox_provider_with, proxmox_settings};
use delegate_tests::pve_sim::{GuestCommand, PveSim, PveVersion, SimConfig};

const GIB: u64 = 1024 * 1024 * 1024;

/// The shared simulator settings with this file's own placement: no
/// storage for full clones, bridge vmbr0, two clones per node, eight per
/// storage, and shorter waits.
fn settings(sim: &PveSim, instance: &str) -> ProxmoxSettings {
    let mut s = proxmox_settings(sim, instance, 2);
    s.storage = None;
    s.bridge = Some("vmbr0".into());
    s.agent_wait = Duration::from_secs(30);
    s.max_clones_per_storage = 8;
    s.clone_lock_grace = Duration::from_secs(60);
    s
}

fn provider(_sim: &PveSim, s: ProxmoxSettings) -> ProxmoxProvider {
    let retry = RetryPolicy::new(5, Duration::from_millis(20), Duration::from_millis(200));
    proxmox_provider_with(s, retry)
}

/// The VM "runs" a shell that records its bootstrap and waits.
fn recording_guest() -> GuestCommand {
    GuestCommand {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "cp \"$0\" \"$1/seen.json\"; exec sleep 600".into(),
            "{bootstrap}".into(),
            "{root}".into(),
        ],
        env: vec![],
    }
}

fn sim_config() -> SimConfig {
    let mut c = SimConfig::standard();
    c.guest = Some(recording_guest());
    c
}

/// What the jobs layer resolves for a manifest with `"resources": {"cpu":
/// 3, "memory": "3G", "disk": "12G"}` and the host's default template.
fn request(job: &str) -> ProvisionRequest {
    ProvisionRequest {
        job_id: job.into(),
        template: Some("delegate-template".into()),
        size: VmSize {
            cpus: 3,
            memory_bytes: 3 * GIB,
            disk_bytes: 12 * GIB,
        },
        bootstrap: Bootstrap {
            v: 1,
            job_id: job.into(),
            callback_url: "http://127.0.0.1:8765".into(),
            token: "t".repeat(64),
            egress_url: None,
        },
        egress_url: None,
        deadline_ms: 4_102_444_800_000,
    }
}

type Created = Arc<Mutex<Vec<VmRef>>>;

async fn provision(p: &ProxmoxProvider, job: &str) -> (Result<VmRef, String>, Created) {
    let created: Created = Arc::default();
    let c2 = created.clone();
    let r = p
        .provision(request(job), &move |vm| c2.lock().unwrap().push(vm))
        .await
        .map_err(|e| e.to_string());
    (r, created)
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met in 30 s");
}

#[tokio::test]
async fn provisions_a_configured_vm_whose_guest_gets_the_bootstrap() {
    let sim = PveSim::start(sim_config()).await.unwrap();
    let p = provider(&sim, settings(&sim, "test-a"));
    let job = "11111111-2222-4333-8444-555555555555";
    let (vm, created) = provision(&p, job).await;
    let vm = vm.unwrap();
    assert_eq!(
        created.lock().unwrap().as_slice(),
        std::slice::from_ref(&vm)
    );
    assert_eq!(vm.provider, "proxmox");
    let vmid: u32 = vm.id.parse().unwrap();
    assert_eq!(vmid, 90000);
    // pve2 has the most free memory in the standard cluster.
    assert_eq!(vm.node.as_deref(), Some("pve2"));

    let (cfg, running, pool) = sim.with(|c| {
        let v = &c.vms[&vmid];
        (v.config.clone(), v.running, v.pool.clone())
    });
    assert!(running);
    assert_eq!(pool.as_deref(), Some("delegate"));
    assert_eq!(cfg["cores"], "3");
    assert_eq!(cfg["memory"], "3072");
    assert_eq!(cfg["tags"], "delegate;delegate-test-a");
    assert_eq!(cfg["name"], format!("dlg-{job}"));
    assert!(!cfg.contains_key("lock"));
    let meta =
        delegate_host::provider::proxmox::metadata::parse_description(&cfg["description"]).unwrap();
    assert_eq!(meta.job_id, job);
    assert_eq!(meta.host_instance, "test-a");
    assert_eq!(meta.deadline_ms, 4_102_444_800_000);
    // smbios1: the template's uuid kept, serial = base64(job id).
    let smbios = &cfg["smbios1"];
    assert!(
        smbios.contains("uuid=5d2c9b1e-8f3a-4c6d-9e7f-0a1b2c3d4e5f"),
        "{smbios}"
    );
    let serial = smbios
        .split(',')
        .find_map(|kv| kv.strip_prefix("serial="))
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(serial)
            .unwrap(),
        job.as_bytes()
    );
    // A linked clone of the template's base disk, grown to 12G.
    assert!(
        cfg["scsi0"].starts_with("ceph:base-9000-disk-0/vm-90000-disk-0"),
        "{}",
        cfg["scsi0"]
    );
    assert!(cfg["scsi0"].contains("size=12288M"), "{}", cfg["scsi0"]);
    // The token is nowhere in the config.
    assert!(!format!("{cfg:?}").contains(&"t".repeat(64)));

    // The process inside the VM got exactly the bootstrap.
    let root = sim.vm_root(vmid).unwrap();
    wait_for(|| root.join("seen.json").exists()).await;
    let seen: Bootstrap =
        Bootstrap::from_json(&std::fs::read(root.join("seen.json")).unwrap()).unwrap();
    assert_eq!(seen, request(job).bootstrap);
    let pids = sim.guest_pids();
    assert_eq!(pids.len(), 1);

    // Destroy: gone, process killed; twice is fine.
    p.destroy(&vm).await.unwrap();
    assert!(sim.guest_vmids().is_empty());
    wait_for(|| {
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists() || is_zombie(pids[0])
    })
    .await;
    p.destroy(&vm).await.unwrap();
    // A VmRef without node is found (or found gone) too.
    p.destroy(&VmRef {
        node: None,
        ..vm.clone()
    })
    .await
    .unwrap();
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

#[tokio::test]
async fn reconciliation_lists_only_this_instances_vms() {
    let sim = PveSim::start(sim_config()).await.unwrap();
    let a = provider(&sim, settings(&sim, "host-a"));
    let b = provider(&sim, settings(&sim, "host-b"));
    let (va, _) = provision(&a, "aaaaaaaa-0000-4000-8000-000000000001").await;
    let va = va.unwrap();
    // b allocates from the same range; the cluster shows 90000 taken.
    let (vb, _) = provision(&b, "bbbbbbbb-0000-4000-8000-000000000002").await;
    let vb = vb.unwrap();
    assert_ne!(va.id, vb.id);
    let owned = a.list_owned().await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].vm, va);
    assert_eq!(
        owned[0].job_id.as_deref(),
        Some("aaaaaaaa-0000-4000-8000-000000000001")
    );
    assert_eq!(owned[0].deadline_ms, Some(4_102_444_800_000));
    // Refuses to destroy outside its range.
    let err = a
        .destroy(&VmRef {
            provider: "proxmox".into(),
            id: "9000".into(),
            node: Some("pve1".into()),
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("outside PROXMOX_VMID_RANGE"),
        "{err}"
    );
    a.destroy(&va).await.unwrap();
    b.destroy(&vb).await.unwrap();
    assert!(a.list_owned().await.unwrap().is_empty());
    assert!(sim.guest_vmids().is_empty());
}

#[tokio::test]
async fn vmid_races_and_taken_ids_are_skipped() {
    let sim = PveSim::start(sim_config()).await.unwrap();
    let p = provider(&sim, settings(&sim, "race"));
    sim.faults(|f| f.steal_next_vmid = true);
    let (vm, _) = provision(&p, "cccccccc-0000-4000-8000-000000000003").await;
    let vm = vm.unwrap();
    assert_eq!(vm.id, "90001", "90000 was taken just before our clone");
    p.destroy(&vm).await.unwrap();
    // The stolen VM is not ours and stays.
    assert_eq!(sim.guest_vmids(), vec![90000]);
}

#[tokio::test]
async fn clone_failure_and_agent_timeout_are_reported_and_cleaned() {
    let sim = PveSim::start(sim_config()).await.unwrap();
    let mut s = settings(&sim, "fail");
    s.agent_wait = Duration::from_secs(1);
    let p = provider(&sim, s);
    sim.faults(|f| f.clone_failures = 1);
    let (r, created) = provision(&p, "dddddddd-0000-4000-8000-000000000004").await;
    let err = r.unwrap_err();
    assert!(err.contains("clone failed"), "{err}");
    let vm = created.lock().unwrap()[0].clone();
    p.destroy(&vm).await.unwrap();

    sim.faults(|f| f.agent_never_ready = true);
    let (r, created) = provision(&p, "dddddddd-0000-4000-8000-000000000005").await;
    let err = r.unwrap_err();
    assert!(err.contains("guest agent did not answer"), "{err}");
    let vm = created.lock().unwrap()[0].clone();
    p.destroy(&vm).await.unwrap();
    assert!(sim.guest_vmids().is_empty());
}

#[tokio::test]
async fn offline_nodes_and_node_lists_steer_placement() {
    let sim = PveSim::start(sim_config()).await.unwrap();
    sim.set_node_online("pve2", false);
    let p = provider(&sim, settings(&sim, "place"));
    let (vm, _) = provision(&p, "eeeeeeee-0000-4000-8000-000000000006").await;
    let vm = vm.unwrap();
    assert_eq!(
        vm.node.as_deref(),
        Some("pve3"),
        "pve3 is the emptiest online node"
    );
    p.destroy(&vm).await.unwrap();

    let mut s = settings(&sim, "place");
    s.nodes = Some(vec!["pve1".into()]);
    let p = provider(&sim, s);
    let (vm, _) = provision(&p, "eeeeeeee-0000-4000-8000-000000000007").await;
    let vm = vm.unwrap();
    assert_eq!(vm.node.as_deref(), Some("pve1"));
    p.destroy(&vm).await.unwrap();

    // A template on local storage can only be cloned on its node.
    let mut s = settings(&sim, "place");
    s.nodes = Some(vec!["pve3".into()]);
    let p = provider(&sim, s);
    let mut req = request("eeeeeeee-0000-4000-8000-000000000008");
    req.template = Some("delegate-local".into());
    let err = p.provision(req, &|_| {}).await.unwrap_err();
    assert!(err.to_string().contains("no online node can host"), "{err}");
}

#[tokio::test]
async fn full_clones_when_configured_or_when_linking_is_impossible() {
    let sim = PveSim::start(sim_config()).await.unwrap();
    let mut s = settings(&sim, "full");
    s.clone = CloneMode::Full;
    s.storage = Some("local-lvm".into());
    let p = provider(&sim, s);
    let (vm, _) = provision(&p, "ffffffff-0000-4000-8000-000000000009").await;
    let vm = vm.unwrap();
    let vmid: u32 = vm.id.parse().unwrap();
    let disk = sim.with(|c| c.vms[&vmid].config["scsi0"].clone());
    assert!(
        disk.starts_with(&format!("local-lvm:vm-{vmid}-disk-0")),
        "{disk}"
    );
    p.destroy(&vm).await.unwrap();
}

#[tokio::test]
async fn a_burst_spreads_over_nodes_within_the_clone_caps() {
    let mut cfg = sim_config();
    cfg.timings.linked_clone = Duration::from_millis(300);
    let sim = PveSim::start(cfg).await.unwrap();
    let mut s = settings(&sim, "burst");
    s.max_clones_per_node = 1;
    s.max_clones_per_storage = 3;
    let p = Arc::new(provider(&sim, s));
    let mut handles = Vec::new();
    for i in 0..12 {
        let p = p.clone();
        handles.push(tokio::spawn(async move {
            let job = format!("12345678-0000-4000-8000-{i:012}");
            provision(&p, &job).await.0
        }));
    }
    let mut vms = Vec::new();
    for h in handles {
        vms.push(h.await.unwrap().unwrap());
    }
    let nodes: BTreeSet<String> = vms.iter().filter_map(|v| v.node.clone()).collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let ids: BTreeSet<&String> = vms.iter().map(|v| &v.id).collect();
    assert_eq!(ids.len(), 12);
    let peak = sim.with(|c| c.clones_peak.clone());
    assert!(peak.values().all(|n| *n <= 1), "{peak:?}");
    for vm in &vms {
        p.destroy(vm).await.unwrap();
    }
    assert!(sim.guest_vmids().is_empty());
}

#[tokio::test]
async fn cancel_while_cloning_destroys_after_the_lock() {
    let mut cfg = sim_config();
    cfg.timings.linked_clone = Duration::from_millis(1500);
    let sim = PveSim::start(cfg).await.unwrap();
    let p = provider(&sim, settings(&sim, "cancel"));
    let created: Created = Arc::default();
    let c2 = created.clone();
    let record = move |vm| c2.lock().unwrap().push(vm);
    let fut = p.provision(request("99999999-0000-4000-8000-000000000010"), &record);
    // Drop the provisioning while the clone task runs.
    let _ = tokio::time::timeout(Duration::from_millis(600), fut).await;
    let vm = created.lock().unwrap()[0].clone();
    let vmid: u32 = vm.id.parse().unwrap();
    assert_eq!(
        sim.with(|c| c.vms[&vmid].lock().map(str::to_string)),
        Some("clone".into())
    );
    p.destroy(&vm).await.unwrap();
    assert!(sim.guest_vmids().is_empty());
}

#[tokio::test]
async fn a_clone_stuck_in_its_lock_is_reported() {
    let sim = PveSim::start(sim_config()).await.unwrap();
    let mut s = settings(&sim, "stuck");
    s.clone_lock_grace = Duration::from_millis(300);
    let p = provider(&sim, s);
    sim.faults(|f| f.clone_hangs = true);
    let created: Created = Arc::default();
    let c2 = created.clone();
    let record = move |vm| c2.lock().unwrap().push(vm);
    let fut = p.provision(request("77777777-0000-4000-8000-000000000011"), &record);
    let _ = tokio::time::timeout(Duration::from_millis(800), fut).await;
    let vm = created.lock().unwrap()[0].clone();
    assert!(
        p.list_owned().await.unwrap().iter().any(|o| o.vm == vm),
        "found while locked"
    );
    let stuck = p.stuck_clones().await.unwrap();
    assert_eq!(stuck, vec![vm.clone()]);
    // Destroy gives up after the grace with PVE's lock message.
    let err = p.destroy(&vm).await.unwrap_err();
    assert!(err.to_string().contains("is locked (clone)"), "{err}");
    // Clean up for real: unlock as an admin would.
    sim.with(|c| {
        let id: u32 = vm.id.parse().unwrap();
        c.vms.get_mut(&id).unwrap().config.remove("lock");
    });
    p.destroy(&vm).await.unwrap();
}

#[tokio::test]
async fn works_on_pve8_with_vm_monitor() {
    let mut cfg = sim_config();
    cfg.version = PveVersion::V8;
    let sim = PveSim::start(cfg).await.unwrap();
    let p = provider(&sim, settings(&sim, "eight"));
    let (vm, _) = provision(&p, "88888888-0000-4000-8000-000000000012").await;
    let vm = vm.unwrap();
    p.destroy(&vm).await.unwrap();
}

#[tokio::test]
async fn doctor_lists_exactly_what_is_missing() {
    use delegate_host::provider::proxmox::doctor::doctor_with;
    use delegate_tests::pve_sim::Grant;
    let sim = PveSim::start(sim_config()).await.unwrap();
    let s = settings(&sim, "doc");
    let p = provider(&sim, s.clone());
    let report = doctor_with(p.client(), &s, Some("delegate-template")).await;
    assert!(report.ok(), "{report}");
    assert_eq!(report.version.as_deref(), Some("9.0.8"));

    // A token set up for PVE 8 (VM.Monitor) misses the PVE 9 agent privileges.
    let mut privs = delegate_tests::pve_sim::perms::delegate_role(true);
    privs.remove("Datastore.AllocateSpace");
    sim.add_token(
        "old@pve!t",
        "s-2",
        vec![Grant {
            path: "/".into(),
            privs,
            propagate: true,
        }],
    );
    let mut s2 = s.clone();
    s2.credentials = Credentials::Token {
        id: "old@pve!t".into(),
        secret: Secret::new("s-2"),
    };
    let p2 = provider(&sim, s2.clone());
    let report = doctor_with(p2.client(), &s2, Some("delegate-template")).await;
    assert!(!report.ok());
    let missing: Vec<(String, String)> = report
        .missing
        .iter()
        .map(|m| (m.path.clone(), m.privilege.clone()))
        .collect();
    assert_eq!(
        missing,
        vec![
            (
                "/storage/ceph".to_string(),
                "Datastore.AllocateSpace".to_string()
            ),
            (
                "/vms/90000 or /pool/delegate".to_string(),
                "VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted".to_string()
            ),
            (
                "/vms/90000 or /pool/delegate".to_string(),
                "VM.GuestAgent.FileWrite|VM.GuestAgent.Unrestricted".to_string()
            ),
        ],
        "{report}"
    );
    // Unknown template and an unreachable API are reported, not panicked on.
    let report = doctor_with(p.client(), &s, Some("nope")).await;
    assert!(report.to_string().contains("no template named"), "{report}");
    let mut bad = s.clone();
    bad.tls.fingerprints = vec![[1u8; 32]];
    let report = delegate_host::provider::proxmox::doctor(&bad, Some("delegate-template")).await;
    assert!(!report.ok());
    assert!(
        report.to_string().contains("PROXMOX_FINGERPRINT"),
        "{report}"
    );
}
