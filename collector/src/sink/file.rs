//! The local log: append-only NDJSON segment files with group commit.
//!
//! # Layout on disk
//! ```text
//! <data_dir>/LOCK                       held while a collector uses the directory
//! <data_dir>/events/<utc-time>-<n>.ndjson      accepted records
//! <data_dir>/quarantine/<utc-time>-<n>.ndjson  rejected records with their reason
//! ```
//! Segment names sort in creation order. A restart always opens new segments, and first
//! cuts any torn last line (bytes of a write that was never acknowledged) so readers
//! only ever see whole lines.
//!
//! # Group commit
//! One writer thread owns the files. Requests queue their bytes; the writer takes every
//! request waiting at that moment, writes them with one `write` per stream and one
//! `fdatasync` per stream, then answers them all. While it syncs, the next group forms,
//! so throughput is not capped by fsync latency. When the CPU is saturated (the
//! collector's own use, or no idle time left on the CPUs it runs on) and requests keep
//! arriving, the writer waits up to `log.commit_delay` for a group of [`GROUP_TARGET`]
//! requests (fewer fsyncs, each of which costs CPU) and yields the CPU to the requests
//! (`SCHED_BATCH`, so its wake-ups do not preempt the runtime); otherwise (light or
//! moderate load) it commits at once (no added latency).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry::KeyValue;
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::sync::{mpsc, oneshot};

use super::{AppendBatch, EventLog, LogConfig, LogError};
use crate::telemetry::Metrics;

enum Message {
    Append {
        batch: AppendBatch,
        done: oneshot::Sender<Result<(), LogError>>,
    },
    Close(oneshot::Sender<()>),
}

/// The local durable log.
pub struct FileLog {
    queue: mpsc::Sender<Message>,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl FileLog {
    /// Opens (creating) the data directory, takes its lock, repairs torn tails and
    /// starts the writer thread.
    ///
    /// # Errors
    /// The directory cannot be created or written, or another collector holds it.
    pub fn open(data_dir: &Path, config: &LogConfig, metrics: Arc<Metrics>) -> io::Result<FileLog> {
        std::fs::create_dir_all(data_dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("LOCK"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another collector", data_dir.display()),
            )
        })?;
        let events = Stream::open(data_dir.join("events"), config)?;
        let quarantine = Stream::open(data_dir.join("quarantine"), config)?;
        let (queue, rx) = mpsc::channel(config.queue_capacity.get());
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            events,
            quarantine,
            max_group_bytes: config.max_group_bytes.as_u64() as usize,
            commit_delay: config.commit_delay,
            healthy: healthy.clone(),
            metrics: metrics.clone(),
            _lock: lock,
        };
        std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(FileLog {
            queue,
            healthy,
            metrics,
        })
    }
}

#[async_trait]
impl EventLog for FileLog {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        let started = Instant::now();
        let (done, answer) = oneshot::channel();
        let result = match self.queue.try_send(Message::Append { batch, done }) {
            Ok(()) => {
                let depth = self.queue.max_capacity() - self.queue.capacity();
                self.metrics.log_queue_depth.record(depth as i64, &[]);
                answer.await.unwrap_or(Err(LogError::Closed))
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(LogError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(LogError::Closed),
        };
        self.metrics.observe_log_append(started, &result);
        result
    }

    fn ready(&self) -> bool {
        !self.queue.is_closed() && self.healthy.load(Ordering::Relaxed)
    }

    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// Requests a group commit should cover before waiting for more is no longer worth it.
pub const GROUP_TARGET: usize = 10;

/// The CPU use at or above which the collector counts as saturated (a share of the
/// cores it may use, or of the time of the CPUs it may run on that they were not idle),
/// and the share it must fall under to count as no longer so.
const SATURATED: (f64, f64) = (0.85, 0.7);

/// Requests a wait must be expected to bring into a group to be worth it.
const MIN_GAIN: f64 = 2.0;

/// How long the writer waits for a group to fill: only under load — the CPU is
/// saturated (then fsyncs cost CPU the requests need) and the recent arrival rate
/// brings a few more requests within the longest delay allowed — and only as long as
/// the rest of the group takes to arrive, at most that delay. Otherwise it commits at
/// once: with CPU to spare the fsyncs are affordable, and a wait would only add
/// latency (a burst that happens to queue half a group at moderate load is not a
/// reason to hold it).
#[derive(Debug)]
struct Gathering {
    max_delay: Duration,
    /// Requests per second, smoothed over the last groups.
    rate: f64,
    /// When the previous group was taken.
    last: Instant,
    /// The recent CPU use (see [`CpuUse`]).
    busy: f64,
}

impl Gathering {
    fn new(max_delay: Duration) -> Self {
        Gathering {
            max_delay,
            rate: 0.0,
            last: Instant::now(),
            busy: 0.0,
        }
    }

    /// The wait for a group holding `have` requests.
    fn wait(&self, have: usize) -> Duration {
        if have >= GROUP_TARGET || !self.under_load(SATURATED.0, 1.0) {
            return Duration::ZERO;
        }
        let fill = (GROUP_TARGET - have) as f64 / self.rate;
        Duration::from_secs_f64(fill.min(self.max_delay.as_secs_f64()))
    }

    /// Whether the CPU is at least `busy` used and the rate brings [`MIN_GAIN`]
    /// requests within `share` of the longest delay.
    fn under_load(&self, busy: f64, share: f64) -> bool {
        !self.max_delay.is_zero()
            && self.busy >= busy
            && self.rate * share * self.max_delay.as_secs_f64() >= MIN_GAIN
    }

    /// Whether the writer should now yield the CPU to the requests: when it is under
    /// load, it wakes for every request that arrives, and each wake-up would preempt
    /// the runtime (on a shared core, thousands of switches a second). Not below
    /// saturation: there a yielding writer waits for the runtime's time slices while
    /// the CPU has room (at half the maximum rate, appends stalled up to 0.5 s).
    /// Leaving takes less CPU and a rate a fifth lower than entering, so that it does
    /// not flap.
    fn yielding(&self, was: bool) -> bool {
        if was {
            self.under_load(SATURATED.1, 1.25)
        } else {
            self.under_load(SATURATED.0, 1.0)
        }
    }

    /// A group of `requests` was taken at `now`: they arrived since the last one.
    fn taken(&mut self, requests: usize, now: Instant) {
        let span = now.duration_since(self.last).as_secs_f64().max(1e-6);
        self.last = now;
        let rate = requests as f64 / span;
        self.rate = if self.rate == 0.0 {
            rate
        } else {
            0.7 * self.rate + 0.3 * rate
        };
    }
}

/// How busy the CPU is around the collector, sampled at most every
/// [`CpuUse::PERIOD`]: the larger of the process's CPU time as a share of the cores it
/// may use, and the share of time the CPUs it may run on were not idle. The second
/// sees what the first cannot: other processes on those CPUs, and on a virtual
/// machine the time its host gave to others (stolen time), which counts as neither
/// this process's nor idle. Under heavy steal a saturated collector used only 60–75 %
/// of its core by its own count.
struct CpuUse {
    cores: f64,
    /// The CPUs this process may run on, `None` for all.
    cpus: Option<Vec<usize>>,
    process_last: Option<(Instant, Duration)>,
    machine_last: Option<Ticks>,
    /// The process's own share over the last period.
    process: f64,
    /// The share of the last period its CPUs were not idle.
    machine: f64,
}

impl CpuUse {
    const PERIOD: Duration = Duration::from_millis(100);

    fn new() -> CpuUse {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuUse {
            cores: cores as f64,
            cpus: allowed_cpus(),
            process_last: None,
            machine_last: None,
            process: 0.0,
            machine: 0.0,
        }
    }

    /// The busier of the two shares over the last period that ended by `now`; unknown
    /// reads as saturated (the writer then behaves as it would under load).
    fn sample(&mut self, now: Instant) -> f64 {
        if self
            .process_last
            .is_some_and(|(at, _)| now.duration_since(at) < Self::PERIOD)
        {
            return self.process.max(self.machine);
        }
        let Some(cpu) = process_cpu_time() else {
            return 1.0;
        };
        if let Some((at, used)) = self.process_last {
            let wall = now.duration_since(at).as_secs_f64() * self.cores;
            self.process = cpu.saturating_sub(used).as_secs_f64() / wall;
        }
        self.process_last = Some((now, cpu));
        let ticks = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| cpu_ticks(&stat, self.cpus.as_deref()));
        if let Some(share) = self
            .machine_last
            .zip(ticks)
            .and_then(|(a, b)| b.busy_since(a))
        {
            self.machine = share;
        }
        self.machine_last = ticks;
        self.process.max(self.machine)
    }
}

/// CPU time used by every thread of this process so far.
fn process_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut time = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `time` is a valid timespec the call writes into.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) } == 0;
        ok.then(|| Duration::new(time.tv_sec as u64, time.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    None
}

/// Clock ticks of some CPUs since boot.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ticks {
    /// Idle or waiting for I/O.
    idle: u64,
    /// All of them: busy, idle and stolen.
    total: u64,
}

impl Ticks {
    /// The share of the ticks since `earlier` that were not idle; `None` when none
    /// passed.
    fn busy_since(self, earlier: Ticks) -> Option<f64> {
        let total = self.total.saturating_sub(earlier.total);
        let idle = self.idle.saturating_sub(earlier.idle).min(total);
        (total > 0).then(|| 1.0 - idle as f64 / total as f64)
    }
}

/// The ticks of the CPUs in `cpus` (every CPU for `None`) in the text of `/proc/stat`,
/// whose lines `cpuN user nice system idle iowait irq softirq steal …` count each
/// CPU's time by what it did; `None` when no line names one of them.
fn cpu_ticks(stat: &str, cpus: Option<&[usize]>) -> Option<Ticks> {
    let mut sum: Option<Ticks> = None;
    for line in stat.lines() {
        // `cpu ` (every CPU together) has no number and is skipped.
        let Some((name, values)) = line.split_once(' ') else {
            continue;
        };
        let Some(Ok(cpu)) = name.strip_prefix("cpu").map(str::parse::<usize>) else {
            continue;
        };
        if cpus.is_some_and(|cpus| !cpus.contains(&cpu)) {
            continue;
        }
        let sum = sum.get_or_insert(Ticks { idle: 0, total: 0 });
        // The first eight: guest time is counted in user time already.
        for (i, value) in values.split_ascii_whitespace().take(8).enumerate() {
            let value = value.parse::<u64>().unwrap_or(0);
            sum.total += value;
            if i == 3 || i == 4 {
                sum.idle += value;
            }
        }
    }
    sum
}

/// The CPUs this process may run on (`Cpus_allowed_list` of `/proc/self/status`, such
/// as `0-3,8`), `None` when unknown (then every CPU counts).
fn allowed_cpus() -> Option<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list)
}

/// `0-3,8` → `[0, 1, 2, 3, 8]`; `None` for anything else.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((first, last)) => cpus.extend(first.parse::<usize>().ok()?..=last.parse().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

struct Writer {
    events: Stream,
    quarantine: Stream,
    max_group_bytes: usize,
    commit_delay: Duration,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Held for the writer's life: the directory lock.
    _lock: File,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut group = Vec::new();
        let mut closing = None;
        let mut gathering = Gathering::new(self.commit_delay);
        let mut cpu = CpuUse::new();
        let mut yielding = false;
        while closing.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            let mut bytes = 0;
            self.gather(&mut rx, Some(first), &mut group, &mut bytes, &mut closing);
            gathering.busy = cpu.sample(Instant::now());
            // Under load, wait for the group to fill if it soon will: fewer fsyncs, and
            // the CPU they cost goes to requests instead.
            let wait = gathering.wait(group.len());
            if !wait.is_zero() && closing.is_none() && bytes < self.max_group_bytes {
                std::thread::sleep(wait);
                self.gather(&mut rx, None, &mut group, &mut bytes, &mut closing);
            }
            gathering.taken(group.len(), Instant::now());
            if gathering.yielding(yielding) != yielding {
                yielding = !yielding;
                yield_to_requests(yielding);
            }
            if !group.is_empty() {
                self.commit(&mut group);
            }
        }
        // Appends queued behind a close (none in an orderly shutdown) are refused.
        rx.close();
        while let Ok(message) = rx.try_recv() {
            if let Message::Append { done, .. } = message {
                let _ = done.send(Err(LogError::Closed));
            }
        }
        // Release the files and the directory lock before saying we are closed.
        drop(self);
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Adds `first` and every request already queued to `group`, up to the group's byte
    /// limit or a close.
    fn gather(
        &self,
        rx: &mut mpsc::Receiver<Message>,
        first: Option<Message>,
        group: &mut Vec<(AppendBatch, oneshot::Sender<Result<(), LogError>>)>,
        bytes: &mut usize,
        closing: &mut Option<oneshot::Sender<()>>,
    ) {
        let mut next = first.or_else(|| rx.try_recv().ok());
        while let Some(message) = next.take() {
            match message {
                Message::Append { batch, done } => {
                    *bytes += batch.len();
                    group.push((batch, done));
                }
                Message::Close(done) => {
                    *closing = Some(done);
                    return;
                }
            }
            if *bytes < self.max_group_bytes {
                next = rx.try_recv().ok();
            }
        }
    }

    /// Writes and syncs one group, then answers every request in it.
    fn commit(&mut self, group: &mut Vec<(AppendBatch, oneshot::Sender<Result<(), LogError>>)>) {
        // Quarantine first: if the events write then fails, the retry re-quarantines a
        // rejected event (harmless), whereas the other order could log accepted events
        // twice.
        let result = self
            .quarantine
            .append(
                group.iter().map(|(b, _)| b.quarantine.as_slice()),
                &self.metrics,
            )
            .and_then(|()| {
                self.events.append(
                    group.iter().map(|(b, _)| b.events.as_slice()),
                    &self.metrics,
                )
            });
        let result = result.map_err(|e| LogError::Io(Arc::new(e)));
        self.healthy.store(result.is_ok(), Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, requests = group.len(), "log write failed; the requests get 503");
        } else {
            self.metrics
                .log_group_requests
                .record(group.len() as u64, &[]);
        }
        for (_, done) in group.drain(..) {
            let _ = done.send(result.clone());
        }
    }
}

/// One stream of segment files (events or quarantine).
struct Stream {
    dir: PathBuf,
    label: &'static str,
    current: Option<Segment>,
    max_bytes: u64,
    max_age: Duration,
    /// `log.drop_page_cache`: drop each write's pages from the page cache once synced.
    drop_page_cache: bool,
}

struct Segment {
    file: File,
    len: u64,
    /// Bytes of disk reserved for the segment (`fallocate` past its end, the size
    /// unchanged): writes into reserved blocks allocate nothing, so an `fdatasync`
    /// flushes less metadata. Released when the segment is closed.
    reserved: u64,
    opened: Instant,
}

/// How far ahead of a segment's end disk is reserved: bounded waste per open segment,
/// one `fallocate` per this many bytes written.
const RESERVE_STEP: u64 = 8 << 20;

impl Segment {
    /// Reserves disk for `bytes` more, and a step beyond, when the reservation is
    /// short. Best effort: a filesystem without `fallocate`, or a full disk, leaves
    /// the segment to grow as it writes (a full disk then fails the write itself).
    fn reserve(&mut self, bytes: u64) {
        let end = self.len + bytes;
        if end <= self.reserved {
            return;
        }
        let target = end + RESERVE_STEP;
        if reserve_past_end(&self.file, self.reserved, target - self.reserved) {
            self.reserved = target;
        } else {
            // Do not try again on every write.
            self.reserved = u64::MAX;
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Give back the reservation past the last whole line (a truncate to the
        // segment's length frees the blocks past it); a crash leaves it to the next
        // start's repair.
        if self.reserved > self.len {
            let _ = self.file.set_len(self.len);
        }
    }
}

/// `fallocate(FALLOC_FL_KEEP_SIZE)`: allocates blocks past the end without changing
/// the file's size, so that readers see only what was written.
#[cfg(target_os = "linux")]
fn reserve_past_end(file: &File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: `file` is an open descriptor for the duration of the call; `fallocate`
    // reads no memory of ours.
    unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) == 0 }
}

/// Asks the kernel to drop the page-cache pages of bytes `offset..offset + len`, once
/// synced: the collector never reads its log back, so they would only crowd out other
/// pages, and the pages it gives back are soon reused by its next writes, already
/// mapped (on a virtual machine whose free memory goes back to the host, each write
/// into a page never used before costs a fault to the host). The page holding the
/// end of the last line stays, since the next write goes on in it (dropped, it would
/// first be read back from the disk: one synchronous read per group); the next call
/// covers it.
#[cfg(target_os = "linux")]
fn drop_cached(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let page = crate::os::page_size() as u64;
    // Whole pages only, from the page holding `offset` (which the last call left) to
    // the last one the write filled. The kernel would keep a partial page at either
    // end itself, except the file's last page, which it drops: not ours to leave to it.
    let start = offset - offset % page;
    let end = offset + len;
    let end = end - end % page;
    if end <= start {
        return;
    }
    let (Ok(from), Ok(len)) = (
        libc::off_t::try_from(start),
        libc::off_t::try_from(end - start),
    ) else {
        return;
    };
    // SAFETY: `file` is an open descriptor for the duration of the call, which reads
    // no memory of ours. Advice only: a failure changes nothing that was written.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), from, len, libc::POSIX_FADV_DONTNEED) };
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &File, _offset: u64, _len: u64) {}

#[cfg(not(target_os = "linux"))]
fn reserve_past_end(_file: &File, _offset: u64, _len: u64) -> bool {
    false
}

/// Under load, the writer thread runs as Linux `SCHED_BATCH`: its wake-ups no longer
/// preempt the runtime, they wait for its time slice, and groups grow. Off load it is
/// an ordinary thread again, so that a request's commit never waits for a slice.
fn yield_to_requests(yielding: bool) {
    #[cfg(target_os = "linux")]
    {
        let policy = if yielding {
            libc::SCHED_BATCH
        } else {
            libc::SCHED_OTHER
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `0` names the calling thread; `param` lives across the call, which
        // only reads it.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "could not change the log writer's scheduling");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = yielding;
}

/// Whether a file holds more disk than its size needs (a reservation left behind).
fn holds_disk_past_end(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512 > meta.len().next_multiple_of(meta.blksize().max(512))
}

impl Stream {
    fn open(dir: PathBuf, config: &LogConfig) -> io::Result<Stream> {
        std::fs::create_dir_all(&dir)?;
        for segment in tollgate_log::segments(&dir)? {
            repair_torn_tail(&segment)?;
        }
        let label = if dir.ends_with("events") {
            "events"
        } else {
            "quarantine"
        };
        Ok(Stream {
            dir,
            label,
            current: None,
            max_bytes: config.segment_max_bytes.as_u64(),
            max_age: config.segment_max_age,
            drop_page_cache: config.drop_page_cache,
        })
    }

    /// Appends the chunks (each request's bytes, in order, without copying them into one
    /// buffer) with as few `writev` calls as the kernel allows, and syncs. On error the segment is cut back to
    /// its length before the write, so no partial line is ever left, and kept for the
    /// next write: a full disk (ENOSPC) then creates no new files while it refuses
    /// writes, and the log resumes in the same segment once space returns. A segment
    /// that could not be cut back is abandoned (repaired at the next start).
    fn append<'a>(
        &mut self,
        chunks: impl Iterator<Item = &'a [u8]>,
        metrics: &Metrics,
    ) -> io::Result<()> {
        let mut slices: Vec<io::IoSlice<'_>> = chunks
            .filter(|c| !c.is_empty())
            .map(io::IoSlice::new)
            .collect();
        let total: usize = slices.iter().map(|s| s.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let rotate = self
            .current
            .as_ref()
            .is_some_and(|s| s.len >= self.max_bytes || s.opened.elapsed() >= self.max_age);
        if rotate || self.current.is_none() {
            self.current = Some(self.new_segment()?);
        }
        let segment = self.current.as_mut().expect("opened above");
        segment.reserve(total as u64);
        let before = segment.len;
        let written = write_all(&mut segment.file, &mut slices).and_then(|()| {
            let started = Instant::now();
            segment.file.sync_data()?;
            metrics
                .log_fsync_duration
                .record(started.elapsed().as_secs_f64(), &[]);
            if self.drop_page_cache {
                drop_cached(&segment.file, before, total as u64);
            }
            Ok(())
        });
        match written {
            Ok(()) => {
                segment.len += total as u64;
                metrics
                    .log_bytes
                    .add(total as u64, &[KeyValue::new("stream", self.label)]);
                Ok(())
            }
            Err(e) => {
                // Undo what may have reached the file, then start afresh next time.
                // The cut gives back the reservation past `before` as well.
                segment.reserved = before;
                let undo = segment
                    .file
                    .set_len(before)
                    .and_then(|()| segment.file.sync_all());
                if let Err(undo) = undo {
                    tracing::error!(error = %undo, "could not cut a failed write from the segment; it is repaired at the next start");
                    self.current = None;
                }
                Err(e)
            }
        }
    }

    fn new_segment(&self) -> io::Result<Segment> {
        let stamp = OffsetDateTime::now_utc()
            .format(format_description!(
                "[year][month][day]T[hour][minute][second].[subsecond digits:6]Z"
            ))
            .map_err(io::Error::other)?;
        for n in 0.. {
            let path = self.dir.join(format!("{stamp}-{n:04}.ndjson"));
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => {
                    // The new name must survive a crash as well as the data in it.
                    File::open(&self.dir)?.sync_all()?;
                    return Ok(Segment {
                        file,
                        len: 0,
                        reserved: 0,
                        opened: Instant::now(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("an unbounded range always yields a free name")
    }
}

/// Writes every slice, in order, with `writev`: each call takes as many slices as the
/// kernel allows (`IOV_MAX`), and the next continues where it stopped.
fn write_all(file: &mut File, slices: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    let mut rest = slices;
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Cuts a segment back to its last complete line. Bytes after it belong to a write
/// that was never synced, hence never acknowledged. Disk reserved past the end by a
/// collector that crashed is given back too.
fn repair_torn_tail(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let meta = file.metadata()?;
    let len = meta.len();
    // Only then: a truncate also stamps the file's mtime, which file shippers read.
    if holds_disk_past_end(&meta) {
        file.set_len(len)?;
    }
    if len == 0 {
        return Ok(());
    }
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(pos) = chunk[..n].iter().rposition(|b| *b == b'\n') {
            let keep = start + pos as u64 + 1;
            if keep != len {
                tracing::warn!(file = %path.display(), cut = len - keep, "cutting a torn last line left by a crash");
                file.set_len(keep)?;
                file.sync_all()?;
            }
            return Ok(());
        }
        if start == 0 {
            tracing::warn!(file = %path.display(), "segment holds no complete line; emptying it");
            file.set_len(0)?;
            return file.sync_all();
        }
        end = start;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_writer_waits_only_when_saturated_and_a_wait_brings_requests() {
        let saturated = |max_delay| Gathering {
            busy: 1.0,
            ..Gathering::new(max_delay)
        };
        let mut g = saturated(Duration::from_millis(2));
        assert_eq!(g.wait(1), Duration::ZERO, "no rate known yet");
        // 5 000 requests/s: the 5 missing take 1 ms, within 2 ms.
        let start = Instant::now();
        g.last = start;
        g.taken(5, start + Duration::from_millis(1));
        assert!((g.rate - 5000.0).abs() < 1.0, "{}", g.rate);
        let wait = g.wait(5);
        assert!((wait.as_secs_f64() - 0.001).abs() < 1e-6, "{wait:?}");
        assert_eq!(g.wait(GROUP_TARGET), Duration::ZERO, "already full");
        // The same rate with CPU to spare: commit at once.
        g.busy = 0.6;
        assert_eq!(g.wait(5), Duration::ZERO);
        // 1 800 requests/s: the 8 missing would take 4.4 ms; 2 ms bring 3.6 of them,
        // so it waits the whole delay.
        let mut g = saturated(Duration::from_millis(2));
        g.last = start;
        g.taken(2, start + Duration::from_secs_f64(2.0 / 1800.0));
        assert_eq!(g.wait(2), Duration::from_millis(2));
        // 800 requests/s: 2 ms would bring 1.6 requests, not worth the wait.
        let mut g = saturated(Duration::from_millis(2));
        g.last = start;
        g.taken(2, start + Duration::from_secs_f64(2.0 / 800.0));
        assert_eq!(g.wait(2), Duration::ZERO);
        // The rate is smoothed: one slow gap does not reset it.
        let mut g = saturated(Duration::from_millis(2));
        g.last = start;
        g.taken(10, start + Duration::from_millis(2));
        g.taken(1, start + Duration::from_millis(12));
        assert!(g.rate > 3000.0, "{}", g.rate);
        // Disabled.
        let g = Gathering {
            rate: 5000.0,
            ..saturated(Duration::ZERO)
        };
        assert_eq!(g.wait(1), Duration::ZERO);
    }

    #[test]
    fn the_writer_yields_under_load_and_stops_below_a_lower_rate() {
        let at = |rate, busy| Gathering {
            rate,
            busy,
            ..Gathering::new(Duration::from_millis(2))
        };
        // A saturated CPU and two requests within 2 ms (1 000 requests/s) to start
        // yielding…
        assert!(!at(900.0, 1.0).yielding(false));
        assert!(at(1000.0, 1.0).yielding(false));
        assert!(at(1000.0, 0.9).yielding(false));
        // …not with CPU to spare, however high the rate…
        assert!(!at(50_000.0, 0.8).yielding(false));
        // …and falling under 800 requests/s or 70 % of the CPU to stop.
        assert!(at(900.0, 0.8).yielding(true));
        assert!(!at(750.0, 1.0).yielding(true));
        assert!(!at(100.0, 1.0).yielding(true));
        assert!(!at(50_000.0, 0.6).yielding(true));
    }

    #[test]
    fn cpu_use_is_the_share_of_the_cores_this_process_used() {
        let mut cpu = CpuUse::new();
        let start = Instant::now();
        assert_eq!(cpu.sample(start), 0.0, "nothing known before a period");
        // Spin for two periods: this thread alone uses a core for part of them.
        while start.elapsed() < 2 * CpuUse::PERIOD {
            std::hint::black_box(start.elapsed());
        }
        let busiest = cpu.sample(Instant::now());
        let spinning = cpu.process;
        assert!(spinning > 0.05 && spinning <= 1.05, "{spinning}");
        assert_eq!(busiest, spinning.max(cpu.machine));
        // The spinning thread kept one of the CPUs it may run on busy.
        #[cfg(target_os = "linux")]
        assert!(cpu.machine > 0.0, "{}", cpu.machine);
        // Idle for two periods (the machine may not be: other tests run).
        std::thread::sleep(2 * CpuUse::PERIOD);
        cpu.sample(Instant::now());
        assert!(cpu.process < spinning, "{} after {spinning}", cpu.process);
        #[cfg(target_os = "linux")]
        assert!((0.0..=1.0).contains(&cpu.machine), "{}", cpu.machine);
    }

    #[test]
    fn cpu_ticks_add_up_the_allowed_cpus_and_count_steal_as_busy() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  300 0 30 500 10 0 5 200 0 0\n\
                    cpu0 100 0 10 100 5 0 5 180 0 0\n\
                    cpu1 200 0 20 400 5 0 0 20 0 0\n\
                    intr 12345 0 1\n\
                    ctxt 999\n";
        assert_eq!(
            cpu_ticks(stat, None),
            Some(Ticks {
                idle: 510,
                total: 1045
            })
        );
        assert_eq!(
            cpu_ticks(stat, Some(&[0])),
            Some(Ticks {
                idle: 105,
                total: 400
            })
        );
        assert_eq!(cpu_ticks(stat, Some(&[7])), None);
        assert_eq!(cpu_ticks("", None), None);
    }

    #[test]
    fn the_machine_is_as_busy_as_its_ticks_were_not_idle() {
        let at = |idle, total| Ticks { idle, total };
        // 100 ticks: 10 idle, the rest busy or stolen.
        assert_eq!(at(110, 1100).busy_since(at(100, 1000)), Some(0.9));
        assert_eq!(at(200, 1100).busy_since(at(100, 1000)), Some(0.0));
        assert_eq!(
            at(100, 1000).busy_since(at(100, 1000)),
            None,
            "no time passed"
        );
    }

    #[test]
    fn cpu_lists_read_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8\n"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list("\t1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("1-x"), None);
        #[cfg(target_os = "linux")]
        assert!(allowed_cpus().is_some_and(|cpus| !cpus.is_empty()));
    }

    /// The calling thread's scheduling policy (field 41 of /proc/thread-self/stat).
    #[cfg(target_os = "linux")]
    fn own_policy() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the parenthesised command name, which may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        fields[38].parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_yielding_writer_runs_as_a_batch_thread_and_back() {
        const SCHED_OTHER: u32 = 0;
        const SCHED_BATCH: u32 = 3;
        let policies = std::thread::spawn(|| {
            yield_to_requests(true);
            let yielding = own_policy();
            yield_to_requests(false);
            (yielding, own_policy())
        })
        .join()
        .unwrap();
        assert_eq!(policies, (SCHED_BATCH, SCHED_OTHER));
    }
    use super::*;
    use tollgate_log::segments;

    /// Tiny segments, so that a few records rotate them.
    fn config() -> LogConfig {
        LogConfig {
            segment_max_bytes: bytesize::ByteSize::b(64),
            queue_capacity: std::num::NonZeroUsize::new(16).unwrap(),
            max_group_bytes: bytesize::ByteSize::mib(1),
            commit_delay: Duration::ZERO,
            ..LogConfig::default()
        }
    }

    fn read_stream(dir: &Path) -> String {
        segments(dir)
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Which of the file's pages are in the page cache (`mincore` over a mapping).
    #[cfg(target_os = "linux")]
    fn resident_pages(path: &Path) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = usize::try_from(file.metadata().unwrap().len()).unwrap();
        let pages = len.div_ceil(crate::os::page_size());
        // SAFETY: a read-only shared mapping of a file we keep open; unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let mut vec = vec![0u8; pages];
        // SAFETY: `vec` holds one byte per page of the mapping.
        let ok = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) };
        // SAFETY: the mapping made above, of `len` bytes.
        unsafe { libc::munmap(map, len) };
        assert_eq!(ok, 0);
        vec.iter().map(|b| *b & 1 == 1).collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn synced_writes_leave_the_page_cache_unless_told_to_stay() {
        for drop_page_cache in [true, false] {
            // Beside the sources, not in a temp dir that may be tmpfs (whose pages are
            // the file itself and never dropped).
            let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
            let config = LogConfig {
                drop_page_cache,
                ..config()
            };
            let config = LogConfig {
                segment_max_bytes: bytesize::ByteSize::mib(64),
                ..config
            };
            let log = FileLog::open(dir.path(), &config, Arc::new(Metrics::new())).unwrap();
            for i in 0..16 {
                let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(64 << 10));
                let batch = AppendBatch {
                    events: line.into_bytes(),
                    ..AppendBatch::default()
                };
                log.append(batch).await.unwrap();
            }
            let segment = &segments(&dir.path().join("events")).unwrap()[0];
            let pages = std::fs::metadata(segment)
                .unwrap()
                .len()
                .div_ceil(crate::os::page_size() as u64);
            let cached = resident_pages(segment);
            let resident = cached.iter().filter(|c| **c).count() as u64;
            log.close().await;
            if drop_page_cache {
                // Only the page holding the end of the last line (the lines are not a
                // whole number of pages), which the next append writes into: had it
                // gone, that append would first read it back from the disk.
                assert_eq!(
                    (resident, cached.last()),
                    (1, Some(&true)),
                    "{resident} of {pages} pages still cached"
                );
            } else {
                // All of them, short of memory pressure from elsewhere.
                assert!(
                    resident * 10 >= pages * 9,
                    "only {resident} of {pages} pages cached"
                );
            }
        }
    }

    #[tokio::test]
    async fn appends_are_durable_rotated_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let log = FileLog::open(dir.path(), &config(), metrics.clone()).unwrap();
        for i in 0..5 {
            let batch = AppendBatch {
                events: format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}\n")
                    .into_bytes(),
                quarantine: if i == 2 {
                    b"{\"q\":1}\n".to_vec()
                } else {
                    Vec::new()
                },
                ..AppendBatch::default()
            };
            log.append(batch).await.unwrap();
        }
        log.close().await;
        assert!(log.append(AppendBatch::default()).await.is_err());
        let events_dir = dir.path().join("events");
        assert!(
            segments(&events_dir).unwrap().len() >= 2,
            "64-byte segments must rotate"
        );
        let lines: Vec<String> = read_stream(&events_dir).lines().map(String::from).collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[4].starts_with("{\"n\":4"));
        assert_eq!(read_stream(&dir.path().join("quarantine")), "{\"q\":1}\n");

        // Restart on the same directory: old segments stay, new lines follow them.
        let log = FileLog::open(dir.path(), &config(), metrics).unwrap();
        log.append(AppendBatch {
            events: b"{\"n\":5}\n".to_vec(),
            ..AppendBatch::default()
        })
        .await
        .unwrap();
        log.close().await;
        let text = read_stream(&events_dir);
        assert_eq!(text.lines().count(), 6);
        assert!(text.ends_with("{\"n\":5}\n"));
    }

    #[tokio::test]
    async fn a_second_collector_cannot_take_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let log = FileLog::open(dir.path(), &config(), metrics.clone()).unwrap();
        let err = FileLog::open(dir.path(), &config(), metrics.clone())
            .err()
            .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        log.close().await;
        // The writer thread dropped the lock on close.
        FileLog::open(dir.path(), &config(), metrics).unwrap();
    }

    #[test]
    fn torn_tails_are_cut_at_the_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        repair_torn_tail(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );
        std::fs::write(&path, "no newline at all").unwrap();
        repair_torn_tail(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    /// Bytes of disk a file holds (its blocks), against what it would need.
    fn allocated(path: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).unwrap();
        (meta.blocks() * 512, meta.len().div_ceil(4096) * 4096)
    }

    #[tokio::test]
    async fn disk_reserved_ahead_is_given_back_when_a_segment_closes() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            commit_delay: Duration::ZERO,
            ..LogConfig::default()
        };
        let log = FileLog::open(dir.path(), &config, Arc::new(Metrics::new())).unwrap();
        for i in 0..3 {
            let batch = AppendBatch {
                events: format!("{{\"n\":{i}}}\n").into_bytes(),
                ..AppendBatch::default()
            };
            log.append(batch).await.unwrap();
        }
        // Readers see exactly the lines written, never the reservation.
        let events = dir.path().join("events");
        assert_eq!(read_stream(&events), "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
        log.close().await;
        let segment = &segments(&events).unwrap()[0];
        let (held, needed) = allocated(segment);
        assert!(held <= needed, "{held} bytes held for {needed}");

        // A crash leaves the reservation: the next start's repair gives it back.
        let path = dir.path().join("crashed.ndjson");
        let file = File::create(&path).unwrap();
        let reserved = reserve_past_end(&file, 0, RESERVE_STEP);
        (&file).write_all(b"{\"a\":1}\n").unwrap();
        if reserved {
            assert!(allocated(&path).0 >= RESERVE_STEP);
        }
        repair_torn_tail(&path).unwrap();
        let (held, needed) = allocated(&path);
        assert!(held <= needed, "{held} bytes held for {needed}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");

        // A whole segment without a reservation is left untouched, its mtime too
        // (file shippers read it).
        let modified = || std::fs::metadata(&path).unwrap().modified().unwrap();
        let before = modified();
        std::thread::sleep(Duration::from_millis(20));
        repair_torn_tail(&path).unwrap();
        assert_eq!(modified(), before);
    }

    #[test]
    fn more_chunks_than_one_writev_takes_are_all_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut file = File::create(&path).unwrap();
        // More slices than one writev takes (IOV_MAX is 1024 on Linux).
        let lines: Vec<Vec<u8>> = (0..2055)
            .map(|i| format!("{{\"n\":{i}}}\n").repeat(i % 3).into_bytes())
            .collect();
        let mut slices: Vec<io::IoSlice<'_>> = lines.iter().map(|l| io::IoSlice::new(l)).collect();
        write_all(&mut file, &mut slices).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), lines.concat());
    }
}
