//! The `profile_update` handler: merges notes and fields into a student's profile file, one
//! write per student for a whole batch of updates.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use queue_core::{HandlerError, IdError, JobHandler, JobRecord, LimitClass};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::parse_payload;
use crate::payloads::ProfileUpdatePayload;

/// Stripes of the per-student write lock: bounded memory, and two students rarely share one.
const LOCK_STRIPES: usize = 16;

const STUDENT_ID_RULE: &str = "must be 1-200 bytes of [A-Za-z0-9_.@-], not starting with '.'";

/// Checks that `student_id` is safe as a file name: 1-200 bytes of `[A-Za-z0-9_.@-]`, not
/// starting with `.` (so never `..`, a hidden file, or one of our temp files).
///
/// # Errors
/// [`IdError`] for the field `student_id`, naming the value and the rule.
pub fn validate_student_id(student_id: &str) -> Result<(), IdError> {
    let ok = !student_id.is_empty()
        && student_id.len() <= 200
        && !student_id.starts_with('.')
        && student_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError { field: "student_id", rule: format!("{student_id:?} is refused; {STUDENT_ID_RULE}") })
    }
}

/// A student's profile file. Keys this version does not know are kept as they were.
#[derive(Debug, Serialize, Deserialize)]
struct Profile {
    student_id: String,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default)]
    fields: Map<String, Value>,
    #[serde(default)]
    updates: u64,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl Profile {
    fn empty(student_id: &str) -> Self {
        Self {
            student_id: student_id.to_owned(),
            notes: Vec::new(),
            fields: Map::new(),
            updates: 0,
            extra: Map::new(),
        }
    }

    fn apply(&mut self, update: ProfileUpdatePayload) {
        self.notes.extend(update.notes);
        self.fields.extend(update.fields);
        self.updates += 1;
    }
}

/// Runs `profile_update` jobs. Profiles live in `profiles_dir/<student_id>.json`; each is
/// replaced atomically (temp file, then rename), so a crash never leaves half a profile.
#[derive(Debug)]
pub struct ProfileUpdateHandler {
    store: Arc<ProfileStore>,
}

/// What the blocking write task needs; shared so that a write outlives a cancelled job future
/// and still holds its lock and counts itself.
#[derive(Debug)]
struct ProfileStore {
    dir: PathBuf,
    writes: AtomicU64,
    temp_seq: AtomicU64,
    // Two batches of one student in two workers of this process must not lose each other's
    // updates; across processes the runtime's per-student batching is what keeps them apart.
    locks: Vec<Mutex<()>>,
}

impl ProfileStore {
    fn lock_for(&self, student_id: &str) -> &Mutex<()> {
        // FNV-1a: stable and cheap; the stripe only needs to be the same for the same student.
        let hash = student_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        &self.locks[usize::try_from(hash % LOCK_STRIPES as u64).unwrap_or(0)]
    }
}

impl ProfileUpdateHandler {
    /// A handler writing profiles under `profiles_dir` (created on first write).
    #[must_use]
    pub fn new(profiles_dir: PathBuf) -> Self {
        Self {
            store: Arc::new(ProfileStore {
                dir: profiles_dir,
                writes: AtomicU64::new(0),
                temp_seq: AtomicU64::new(0),
                locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            }),
        }
    }

    /// Where the profiles live.
    #[must_use]
    pub fn profiles_dir(&self) -> &Path {
        &self.store.dir
    }

    /// How many profile files this handler has written.
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.store.writes.load(Ordering::Relaxed)
    }

    /// Applies `updates` (in order) to one student's profile with a single write; returns the
    /// number of notes the profile holds afterwards.
    async fn merge(
        &self,
        student_id: &str,
        updates: Vec<ProfileUpdatePayload>,
    ) -> Result<usize, HandlerError> {
        let store = Arc::clone(&self.store);
        let id = student_id.to_owned();
        tokio::task::spawn_blocking(move || {
            // A poisoned stripe only means another write panicked; the file itself is whole.
            let _guard = store.lock_for(&id).lock().unwrap_or_else(PoisonError::into_inner);
            let notes_total = merge_blocking(&store.dir, &id, updates, &store.temp_seq)?;
            store.writes.fetch_add(1, Ordering::Relaxed);
            Ok(notes_total)
        })
        .await
        .map_err(|e| {
            HandlerError::retryable(format!("profile write for {student_id:?} did not finish: {e}"))
        })?
    }
}

fn merge_blocking(
    dir: &Path,
    student_id: &str,
    updates: Vec<ProfileUpdatePayload>,
    temp_seq: &AtomicU64,
) -> Result<usize, HandlerError> {
    let io_error = |what: &str, path: &Path, e: &io::Error| {
        HandlerError::retryable(format!("could not {what} {}: {e}", path.display()))
    };
    fs::create_dir_all(dir).map_err(|e| io_error("create", dir, &e))?;
    let path = dir.join(format!("{student_id}.json"));
    let mut profile = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Profile>(&bytes).map_err(|e| {
            // Retrying cannot repair the file, and overwriting it would destroy the profile.
            HandlerError::permanent(format!("profile {} is not a valid profile: {e}", path.display()))
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Profile::empty(student_id),
        Err(e) => return Err(io_error("read", &path, &e)),
    };
    student_id.clone_into(&mut profile.student_id);
    for update in updates {
        profile.apply(update);
    }
    let mut bytes = serde_json::to_vec_pretty(&profile).map_err(|e| {
        HandlerError::permanent(format!("could not encode the profile of {student_id:?}: {e}"))
    })?;
    bytes.push(b'\n');

    // Temp names start with '.', which no student id may, so they never collide with a profile.
    let (temp, mut file) = loop {
        let n = temp_seq.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{student_id}.json.tmp-{}-{n}", std::process::id()));
        match fs::OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => break (temp, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create", &temp, &e)),
        }
    };
    // Flushed to disk before the rename, so the rename never exposes an empty file after a crash.
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&temp, &path)) {
        // Best effort: the write already failed, and a leftover temp file is harmless.
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", &path, &e));
    }
    // Persists the rename itself; not every platform lets a directory be synced, so best effort.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(profile.notes.len())
}

#[async_trait]
impl JobHandler for ProfileUpdateHandler {
    fn permits(&self, _job: &JobRecord) -> Vec<LimitClass> {
        Vec::new()
    }

    async fn handle(&self, job: &JobRecord) -> Result<Value, HandlerError> {
        let mut results = self.handle_batch(std::slice::from_ref(job)).await;
        results.pop().unwrap_or_else(|| Err(HandlerError::permanent("profile batch returned no result")))
    }

    async fn handle_batch(&self, jobs: &[JobRecord]) -> Vec<Result<Value, HandlerError>> {
        let mut results: Vec<Option<Result<Value, HandlerError>>> = vec![None; jobs.len()];
        // Students in order of first appearance, each with its jobs in submission order.
        let mut groups: Vec<(String, Vec<(usize, ProfileUpdatePayload)>)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let update: ProfileUpdatePayload = match parse_payload(job, "profile_update") {
                Ok(update) => update,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            if let Err(e) = validate_student_id(&update.student_id) {
                results[i] = Some(Err(HandlerError::permanent(e.to_string())));
                continue;
            }
            match groups.iter_mut().find(|(id, _)| *id == update.student_id) {
                Some((_, members)) => members.push((i, update)),
                None => groups.push((update.student_id.clone(), vec![(i, update)])),
            }
        }
        for (student_id, members) in groups {
            let batched_with = members.len();
            let (indices, updates): (Vec<usize>, Vec<ProfileUpdatePayload>) = members.into_iter().unzip();
            let outcome = self.merge(&student_id, updates).await;
            if let Err(e) = &outcome {
                tracing::warn!(student = %student_id, jobs = batched_with, error = %e, "profile update failed");
            }
            for i in indices {
                results[i] = Some(outcome.clone().map(|notes_total| {
                    json!({"student_id": student_id, "notes_total": notes_total, "batched_with": batched_with})
                }));
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(HandlerError::permanent("profile update was not applied"))))
            .collect()
    }
}
