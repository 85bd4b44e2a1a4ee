//! Jobs: a bounded FIFO queue in front of one worker thread that owns the device, each job's
//! progress published on a watch channel (polled, streamed as server-sent events, awaited by
//! synchronous requests), cancellation through the pipeline's progress callback.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use flux::{GenerateRequest, ImageMetadata, Stage};
use serde::Serialize;
use tokio::sync::watch;

use flux::Engine;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for the device.
    Queued,
    /// On the device.
    Running,
    /// Finished with images.
    Done,
    /// Finished with an error.
    Failed,
    /// Cancelled (by `DELETE`, or its synchronous client went away).
    Cancelled,
}

impl State {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// A job's status, as `GET /v1/jobs/{id}` and the events route show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// The job id.
    pub id: String,
    /// Where it is.
    pub state: State,
    /// The running stage (`encoding`, `denoising`, ...).
    pub stage: Option<&'static str>,
    /// Steps done in the stage.
    pub step: usize,
    /// Steps in the stage.
    pub total: usize,
    /// With a step cache: the transformer calls computed and reused so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheCounts>,
    /// Unix seconds when it was submitted.
    pub created: u64,
    /// The generated files (`/v1/images/{file}`), when done.
    pub files: Vec<String>,
    /// What went wrong, when failed.
    pub error: Option<String>,
}

/// A step cache's counts in a [`JobStatus`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CacheCounts {
    /// Transformer calls that ran every block.
    pub computed: usize,
    /// Calls that reused the cached residual.
    pub reused: usize,
}

/// A job handed to the worker.
struct Job {
    id: String,
    prompt: String,
    request: GenerateRequest,
    cancel: Arc<AtomicBool>,
    status: watch::Sender<JobStatus>,
}

/// A submitted job, as its submitter holds it.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The job id.
    pub id: String,
    /// Set to cancel.
    pub cancel: Arc<AtomicBool>,
    /// Its status.
    pub status: watch::Receiver<JobStatus>,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum Rejected {
    /// The queue is full.
    Full,
    /// The worker is gone.
    Stopped,
}

/// Jobs kept for `GET /v1/jobs/{id}` after they end (the oldest finished are forgotten).
const KEPT_JOBS: usize = 1024;

/// The queue, the jobs and the generated files.
pub struct Scheduler {
    queue: SyncSender<Job>,
    jobs: Mutex<JobTable>,
    files: Arc<Mutex<HashMap<String, PathBuf>>>,
    next: AtomicU64,
    salt: u64,
}

#[derive(Default)]
struct JobTable {
    by_id: HashMap<String, Ticket>,
    order: VecDeque<String>,
}

impl Scheduler {
    /// Starts the worker thread, which owns `engine`'s device: at most `queue` jobs wait.
    pub fn start(engine: Arc<dyn Engine>, queue: usize, out_dir: PathBuf) -> Arc<Self> {
        let (tx, rx) = sync_channel(queue);
        let files = Arc::new(Mutex::new(HashMap::new()));
        let worker_files = files.clone();
        std::thread::Builder::new()
            .name("flux-worker".into())
            .spawn(move || worker(engine, rx, out_dir, worker_files))
            .expect("spawning the worker thread");
        let salt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Arc::new(Self {
            queue: tx,
            jobs: Mutex::new(JobTable::default()),
            files,
            next: AtomicU64::new(1),
            salt,
        })
    }

    /// Queues `request` (made from `prompt`), or says why not.
    pub fn submit(&self, prompt: String, request: GenerateRequest) -> Result<Ticket, Rejected> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("job-{n:06}-{:08x}", mix(n ^ self.salt) as u32);
        let status = JobStatus {
            id: id.clone(),
            state: State::Queued,
            stage: None,
            step: 0,
            total: 0,
            cache: None,
            created: now(),
            files: Vec::new(),
            error: None,
        };
        let (tx, rx) = watch::channel(status);
        let cancel = Arc::new(AtomicBool::new(false));
        let ticket = Ticket {
            id: id.clone(),
            cancel: cancel.clone(),
            status: rx,
        };
        let job = Job {
            id: id.clone(),
            prompt,
            request,
            cancel,
            status: tx,
        };
        // Registered before it can run, so its id answers at once.
        self.remember(ticket.clone());
        match self.queue.try_send(job) {
            Ok(()) => Ok(ticket),
            Err(e) => {
                self.forget(&id);
                Err(match e {
                    TrySendError::Full(_) => Rejected::Full,
                    TrySendError::Disconnected(_) => Rejected::Stopped,
                })
            }
        }
    }

    /// A job by id.
    pub fn ticket(&self, id: &str) -> Option<Ticket> {
        self.jobs.lock().expect("job table").by_id.get(id).cloned()
    }

    /// The path of a generated file, by the name the server gave it.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        self.files.lock().expect("file table").get(name).cloned()
    }

    /// Jobs waiting or running.
    pub fn pending(&self) -> usize {
        let table = self.jobs.lock().expect("job table");
        table
            .by_id
            .values()
            .filter(|t| !t.status.borrow().state.is_terminal())
            .count()
    }

    fn remember(&self, ticket: Ticket) {
        let mut table = self.jobs.lock().expect("job table");
        table.order.push_back(ticket.id.clone());
        table.by_id.insert(ticket.id.clone(), ticket);
        // Forget the oldest finished jobs beyond the limit (running and queued ones stay).
        while table.order.len() > KEPT_JOBS {
            let Some(oldest) = table
                .order
                .iter()
                .position(|id| table.by_id[id].status.borrow().state.is_terminal())
            else {
                break;
            };
            let id = table.order.remove(oldest).expect("in range");
            table.by_id.remove(&id);
        }
    }

    fn forget(&self, id: &str) {
        let mut table = self.jobs.lock().expect("job table");
        table.by_id.remove(id);
        table.order.retain(|i| i != id);
    }
}

fn worker(
    engine: Arc<dyn Engine>,
    jobs: Receiver<Job>,
    out_dir: PathBuf,
    files: Arc<Mutex<HashMap<String, PathBuf>>>,
) {
    for job in jobs {
        let finish = |state: State, names: Vec<String>, error: Option<String>| {
            job.status.send_modify(|s| {
                s.state = state;
                s.files = names;
                s.error = error;
            });
        };
        if job.cancel.load(Ordering::Relaxed) {
            finish(State::Cancelled, Vec::new(), None);
            continue;
        }
        job.status.send_modify(|s| s.state = State::Running);
        let resolved = match engine.resolve(&job.request) {
            Ok(r) => r,
            Err(e) => {
                finish(State::Failed, Vec::new(), Some(e.to_string()));
                continue;
            }
        };
        let mut on_progress = |p: flux::Progress| {
            job.status.send_modify(|s| {
                s.stage = Some(stage_name(p.stage));
                s.step = p.step;
                s.total = p.total;
                if let Some(c) = p.cache {
                    s.cache = Some(CacheCounts {
                        computed: c.computed,
                        reused: c.reused,
                    });
                }
            });
            if job.cancel.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        match engine.generate(&job.request, &mut on_progress) {
            Ok(images) => {
                let mut meta = ImageMetadata::new(&job.prompt, &resolved);
                if let Some(c) = job.status.borrow().cache {
                    meta.record_cache_counts(flux::CacheStats {
                        computed: c.computed,
                        reused: c.reused,
                    });
                }
                let mut names = Vec::new();
                let mut error = None;
                for (i, image) in images.iter().enumerate() {
                    let name = format!("img-{}-{}.png", job.id, i + 1);
                    let path = out_dir.join(&name);
                    match flux::save_png(image, &path, &meta) {
                        Ok(()) => {
                            files.lock().expect("file table").insert(name.clone(), path);
                            names.push(name);
                        }
                        Err(e) => error = Some(e.to_string()),
                    }
                }
                match error {
                    None => finish(State::Done, names, None),
                    Some(e) => finish(State::Failed, names, Some(e)),
                }
            }
            Err(flux::Error::Cancelled) => finish(State::Cancelled, Vec::new(), None),
            Err(e) => finish(State::Failed, Vec::new(), Some(e.to_string())),
        }
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Loading => "loading",
        Stage::Encoding => "encoding",
        Stage::EncodingImage => "encoding_image",
        Stage::Denoising => "denoising",
        Stage::Decoding => "decoding",
        _ => "other",
    }
}

/// Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SplitMix64: ids that do not reveal the job count alone.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
