//! A guest's event batches as the host takes them: the JSON body parsed,
//! checked by proto's rules, then stored through the host's real log append
//! path into a store on disk. Any batch gives an error or a stored result,
//! never a panic, and what one job keeps on disk stays under its caps
//! however many batches came (floods, gaps, huge offsets, replays).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use delegate_host::jobs::rules;
use delegate_host::provider::Isolation;
use delegate_host::store::{EventLimits, NewJob, Store};
use delegate_proto::{EventBatch, JobManifest, JobState};
use libfuzzer_sys::fuzz_target;

const LIMITS: EventLimits = EventLimits {
    max_log_bytes: 16 << 10,
    max_event_rows: 64,
    max_note_bytes: 4 << 10,
};
/// Batches one job takes before the next job starts fresh: long enough to
/// reach the caps, short enough that the store stays small.
const BATCHES_PER_JOB: u32 = 2000;
/// The note that spends the budget is kept whole (a dropped event's note
/// holds its reason, up to 1 KiB) and a closing note follows it.
const NOTE_SLACK: u64 = 2048;

struct World {
    _dir: tempfile::TempDir,
    data: PathBuf,
    store: Store,
    job: u64,
    batches: u32,
}

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("delegate-fuzz-events.")
            .tempdir()
            .expect("a temporary directory");
        let data = dir.path().to_path_buf();
        let store = Store::open(&data).expect("a new store");
        let mut w = World {
            _dir: dir,
            data,
            store,
            job: 0,
            batches: 0,
        };
        w.next_job();
        w
    }

    fn id(&self) -> String {
        format!("fuzz-{}", self.job)
    }

    /// Starts a new job in `provisioning`, as a guest finds it; the old
    /// one's files go so the disk stays small.
    fn next_job(&mut self) {
        let _ = std::fs::remove_dir_all(self.data.join("logs").join(self.id()));
        self.job += 1;
        self.batches = 0;
        let id = self.id();
        let manifest = JobManifest::from_value(serde_json::json!({
            "task": "fuzz",
            "agentType": "script",
        }))
        .expect("a manifest");
        self.store
            .insert_job(&NewJob {
                id: id.clone(),
                manifest,
                token_hash: [0; 32],
                created_at: 1,
                deadline_at: i64::MAX / 2,
                isolation: Isolation::ProcessSandbox,
            })
            .expect("a new job");
        rules::transition(&self.store, &id, JobState::Provisioning, None, 2).expect("provisioning");
    }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<EventBatch>(data) else {
        return;
    };
    if batch.check().is_err() {
        return;
    }
    let mut guard = WORLD.lock().unwrap_or_else(|e| e.into_inner());
    let world = guard.get_or_insert_with(World::new);
    if world.batches >= BATCHES_PER_JOB {
        world.next_job();
    }
    world.batches += 1;
    let id = world.id();
    // A refusal (a chunk past the cap, a gap) is an answer, not a finding.
    let _ = rules::apply_events(&world.store, &id, &batch.events, LIMITS, 3);

    let logs = world.data.join("logs").join(&id);
    let (out, err, all) = (
        size(&logs.join("stdout.log")),
        size(&logs.join("stderr.log")),
        size(&logs.join("combined.log")),
    );
    assert!(out <= LIMITS.max_log_bytes, "stdout.log is {out} bytes");
    assert!(err <= LIMITS.max_log_bytes, "stderr.log is {err} bytes");
    let combined_cap = 2 * LIMITS.max_log_bytes + LIMITS.max_note_bytes + NOTE_SLACK;
    assert!(all <= combined_cap, "combined.log is {all} bytes");
    let rows = world.store.stored_events(&id).expect("events read").len() as u64;
    assert!(rows <= LIMITS.max_event_rows, "{rows} event rows kept");
});
