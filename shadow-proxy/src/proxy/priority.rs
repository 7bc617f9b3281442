//! The shadow thread's CPU priority: below the primary path's, so that on a busy
//! machine comparing yields first.

/// How the shadow thread shares a busy CPU with the primary path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowPriority {
    /// Linux `SCHED_IDLE`: runs only on CPU time nothing else wants; under saturation
    /// copies wait in the queue and are dropped there, the primary path keeps its CPU.
    Idle,
    /// Nice 10: a tenth of the primary path's share when both want the CPU.
    Low,
    /// The primary path's own priority.
    Normal,
}

/// Lowers the calling thread's CPU priority (Linux keeps one per thread).
pub(super) fn lower_priority(priority: ShadowPriority) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: both calls only read the arguments given; on Linux `0` names the
        // calling thread, and `param` lives across the call.
        let failed = match priority {
            ShadowPriority::Normal => false,
            ShadowPriority::Low => unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) != 0 },
            ShadowPriority::Idle => {
                let param = libc::sched_param { sched_priority: 0 };
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 }
            }
        };
        if failed {
            tracing::warn!(?priority, error = %std::io::Error::last_os_error(), "could not lower the shadow thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

#[cfg(test)]
mod tests {
    use super::{ShadowPriority, lower_priority};

    /// The scheduling policy (field 41 of /proc/thread-self/stat) and nice value (19).
    #[cfg(target_os = "linux")]
    fn own_scheduling() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the parenthesised command name, which may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (fields[38].parse().unwrap(), fields[16].parse().unwrap())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_shadow_thread_gives_way_to_the_primary_path() {
        let on_a_thread = |priority| {
            std::thread::spawn(move || {
                lower_priority(priority);
                own_scheduling()
            })
            .join()
            .unwrap()
        };
        const SCHED_OTHER: u32 = 0;
        const SCHED_IDLE: u32 = 5;
        assert_eq!(on_a_thread(ShadowPriority::Idle).0, SCHED_IDLE);
        assert_eq!(on_a_thread(ShadowPriority::Low), (SCHED_OTHER, 10));
        assert_eq!(on_a_thread(ShadowPriority::Normal).0, SCHED_OTHER);
    }
}
