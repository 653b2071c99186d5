//! Work spread over threads where it is made of independent jobs (buckets, output files,
//! directories to sync): workers taking the next job from a counter, with results in job
//! order so that nothing a run writes depends on the number of threads. Jobs that compute run
//! on Polars' thread pool ([`in_parallel`]), jobs that only wait on the disk on threads of
//! their own ([`in_parallel_io`]).

/// `job(0..n)` on up to `workers` threads, the results in job order. The threads are Polars'
/// pool's, as in the reduce stage: the jobs' allocations then reuse the memory those threads
/// already hold, where fresh threads each took more from the system (11 MiB more peak memory
/// in the disclose stage of the 5 M-line benchmark).
pub fn in_parallel<T: Send>(n: usize, workers: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let (next_job, results, job) = (&next, &slots, &job);
    polars_core::runtime::THREAD_POOL.scope(|pool| {
        for _ in 0..workers.clamp(1, n.max(1)) {
            pool.spawn(move |_| {
                loop {
                    let i = next_job.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let result = job(i);
                    *results[i].lock().expect("a job's slot") = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            let result = slot.into_inner().expect("a job's slot");
            result.expect("every job ran")
        })
        .collect()
}

/// Threads for jobs that only wait on the disk (syncing the staged files and the output's
/// directories): more than the cores, since a thread waiting on `fsync` uses none.
pub const IO_THREADS: usize = 8;

/// `job(0..n)` on up to `threads` threads of their own (not Polars' pool, which has one
/// thread a core), the results in job order: for jobs that mostly wait on the disk.
pub fn in_parallel_io<T: Send>(
    n: usize,
    threads: usize,
    job: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut done: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, n.max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push((i, job(i)));
                    }
                })
            })
            .collect();
        for handle in handles {
            for (i, result) in handle.join().expect("an I/O thread panicked") {
                done[i] = Some(result);
            }
        }
    });
    done.into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// Hands memory that the allocator holds free back to the system: what threads that are done
/// (or a phase that is over) freed stays in glibc's per-thread arenas otherwise, and threads
/// that come next allocate from arenas of their own.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results come back in job order whatever the threads, every job runs once, and no
    /// jobs or more threads than jobs are fine.
    #[test]
    fn jobs_in_parallel_come_back_in_order() {
        for workers in [0, 1, 2, 7] {
            for n in [0, 1, 5, 100] {
                let ran = std::sync::atomic::AtomicUsize::new(0);
                let out = in_parallel(n, workers, |i| {
                    ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    i * i
                });
                assert_eq!(out, (0..n).map(|i| i * i).collect::<Vec<_>>());
                assert_eq!(ran.swap(0, std::sync::atomic::Ordering::Relaxed), n);
                let out = in_parallel_io(n, workers, |i| {
                    ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    i * i
                });
                assert_eq!(out, (0..n).map(|i| i * i).collect::<Vec<_>>());
                assert_eq!(ran.into_inner(), n);
            }
        }
    }
}
