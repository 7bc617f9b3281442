//! Blocks of log lines read by one thread, counted by `threads` workers, and merged in
//! log order by the caller's thread.
//!
//! Reading is cheap next to parsing (a block is a few MiB of whole lines, read with one
//! system call); the workers parse and count; the merger holds results that arrive out of
//! order until the blocks before them are in. A fixed set of buffers circulates between
//! the reader, the workers and the merger, so memory stays bounded whatever the log's
//! size and however uneven the blocks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::mpsc::{channel, sync_channel};

/// Hands each block to the closure it is given, reusing or replacing the buffer.
pub type Emit<'a> = &'a mut dyn FnMut(&mut Vec<u8>);

/// Runs `work` on every block `read` emits and hands each result to `merge`, in the order
/// the blocks were emitted. With one thread, everything runs on the caller's thread.
///
/// # Errors
/// What `read` returns.
pub fn run<P: Send, E: Send>(
    threads: usize,
    read: impl FnOnce(Emit<'_>) -> Result<(), E> + Send,
    work: impl Fn(&[u8]) -> P + Sync,
    mut merge: impl FnMut(P),
) -> Result<(), E> {
    if threads <= 1 {
        return read(&mut |block: &mut Vec<u8>| merge(work(block)));
    }
    // Buffers in circulation: each worker busy with one, one queued for each, one
    // being filled.
    let buffers = 2 * threads + 1;
    let (to_workers, blocks) = sync_channel::<(u64, Vec<u8>)>(buffers);
    let blocks = Mutex::new(blocks);
    std::thread::scope(|scope| {
        let (to_merger, results) = channel::<(u64, P, Vec<u8>)>();
        let (recycle, spare) = channel::<Vec<u8>>();
        for _ in 0..buffers {
            let _ = recycle.send(Vec::new());
        }
        for _ in 0..threads {
            let (blocks, to_merger, work) = (&blocks, to_merger.clone(), &work);
            scope.spawn(move || {
                loop {
                    // The lock is held only while waiting for the next block.
                    let next = blocks.lock().map_or(None, |b| b.recv().ok());
                    let Some((seq, block)) = next else { break };
                    if to_merger.send((seq, work(&block), block)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(to_merger);
        let reader = scope.spawn(move || {
            let mut seq = 0;
            read(&mut |block: &mut Vec<u8>| {
                // Waits for a buffer to come back: this is what bounds the blocks in flight.
                let Ok(mut fresh) = spare.recv() else { return };
                fresh.clear();
                std::mem::swap(block, &mut fresh);
                if to_workers.send((seq, fresh)).is_ok() {
                    seq += 1;
                }
            })
            // Dropping `to_workers` here lets the workers finish.
        });
        let mut next = 0u64;
        let mut waiting = BTreeMap::new();
        for (seq, result, buffer) in results {
            let _ = recycle.send(buffer);
            waiting.insert(seq, result);
            while let Some(result) = waiting.remove(&next) {
                merge(result);
                next += 1;
            }
        }
        match reader.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_merged_in_the_order_blocks_were_read() {
        for threads in [1, 2, 3, 8] {
            let mut merged = Vec::new();
            run::<_, ()>(
                threads,
                |emit| {
                    let mut buffer = Vec::new();
                    for i in 0..200u32 {
                        buffer.clear();
                        buffer.extend_from_slice(&i.to_le_bytes());
                        emit(&mut buffer);
                    }
                    Ok(())
                },
                |block| {
                    let i = u32::from_le_bytes(block.try_into().unwrap());
                    // Uneven work, so that results arrive out of order.
                    std::thread::sleep(std::time::Duration::from_micros(u64::from(i % 7) * 50));
                    i
                },
                |i| merged.push(i),
            )
            .unwrap();
            assert_eq!(merged, (0..200).collect::<Vec<_>>(), "{threads} threads");
        }
    }

    #[test]
    fn a_read_error_is_returned_after_the_blocks_before_it_are_merged() {
        let mut merged = 0;
        let result = run(
            2,
            |emit| {
                let mut buffer = vec![1];
                emit(&mut buffer);
                Err("disk gone")
            },
            |block| block.len(),
            |n| merged += n,
        );
        assert_eq!(result, Err("disk gone"));
        assert_eq!(merged, 1);
    }
}
