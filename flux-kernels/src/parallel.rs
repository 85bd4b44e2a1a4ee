//! Splitting a row loop over the host threads.

/// Runs `f` on `values` split into up to `threads` contiguous parts of whole `unit`-long rows
/// (one scoped thread each; the first part on the calling thread). `f` gets the index of its
/// part's first row and the part. Returns each part's result, in order.
pub fn for_each_part<R: Send>(
    values: &mut [f32],
    unit: usize,
    threads: usize,
    f: impl Fn(usize, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    let unit = unit.max(1);
    let rows_per_part = (values.len() / unit).div_ceil(threads.max(1)).max(1);
    let per = rows_per_part * unit;
    if threads <= 1 || values.len() <= per {
        return vec![f(0, values)];
    }
    std::thread::scope(|scope| {
        let mut parts = values.chunks_mut(per).enumerate();
        let (_, first) = parts.next().expect("more than one part");
        let handles: Vec<_> = parts
            .map(|(i, part)| {
                let f = &f;
                scope.spawn(move || f(i * rows_per_part, part))
            })
            .collect();
        let mut results = vec![f(0, first)];
        for handle in handles {
            results.push(
                handle
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_every_row_once_in_order() {
        for (len, unit, threads) in [(12, 3, 2), (12, 3, 5), (10, 1, 3), (0, 4, 2), (7, 7, 2)] {
            let mut values: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let firsts = for_each_part(&mut values, unit, threads, |first, part| {
                for v in part.iter_mut() {
                    *v += 100.0;
                }
                (first, part.len())
            });
            assert!(
                values
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == i as f32 + 100.0)
            );
            let mut next = 0;
            for (first, n) in firsts {
                assert_eq!(first * unit, next, "{len} {unit} {threads}");
                next += n;
            }
            assert_eq!(next, len);
        }
    }
}
