//! Work spread over the run's worker threads where it is made of independent jobs (buckets,
//! output files): plain scoped threads taking the next job from a counter, with results in
//! job order so that nothing a run writes depends on the number of threads.

/// `job(0..n)` on up to `workers` threads, the results in job order.
pub fn in_parallel<T: Send>(n: usize, workers: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut done: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers.clamp(1, n.max(1)))
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
        for thread in threads {
            for (i, result) in thread.join().expect("a writer thread panicked") {
                done[i] = Some(result);
            }
        }
    });
    done.into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
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
                assert_eq!(ran.into_inner(), n);
            }
        }
    }
}
